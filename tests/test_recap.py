"""RECAP in the learner (learner/algorithms/recap.py) and the adaptive task sampler.

The advantage arithmetic itself is checked against a hand-computed case in test_recap_labels.py;
here: the labels the trainer really uses are that arithmetic on the value network's values, the
conditioned policy obeys its indicator, the value network ranks good states above bad ones, and
RECAP runs in the fleet loop end to end.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import wait_for
from core import wire
from learner.algorithms import make_algorithm
from learner.algorithms.recap import NEGATIVE, POSITIVE, two_hot
from learner.algorithms.recap_labels import binarise, n_step_advantages, task_norm
from learner.samplers import AdaptiveTaskSampler, LabelledEpisode, WindowIndex
from core.episode import EpisodeArrays
from policy import PolicyConfig, VLAPolicy

CONFIG = dict(cameras=("front",), image_size=8, encoder_image_size=8, state_dim=2, action_dim=1, horizon=2,
              n_action_steps=1, d_model=16, n_heads=2, n_layers=1, keypoints=4, vocab=("go", "left", "right"),
              advantage_conditioned=True)


def _episode(task, sources, success, state=0.0, episode_id="e"):
    n = len(sources)
    arrays = {"image/front": np.zeros((n, 8, 8, 3), np.uint8), "state": np.full((n, 2), state, np.float32),
              "action": np.zeros((n, 1), np.float32),
              "source": np.array([wire.SOURCE_TO_PROTO[s] for s in sources], np.int8)}
    return EpisodeArrays("r1", episode_id, task, f"go {task}", "training", 1, success, arrays)


def test_two_hot_puts_the_value_on_its_two_atoms():
    support = torch.linspace(-1, 0, 5)  # atoms -1, -0.75, -0.5, -0.25, 0
    target = two_hot(torch.tensor([-0.6, 0.0, -1.0, -3.0]), support)
    assert target[0].tolist() == pytest.approx([0, 0.4, 0.6, 0, 0])  # -0.6 = 0.4 * -0.75 + 0.6 * -0.5
    assert target[1].tolist() == pytest.approx([0, 0, 0, 0, 1])
    assert target[2].tolist() == pytest.approx([1, 0, 0, 0, 0])
    assert target[3].tolist() == pytest.approx([1, 0, 0, 0, 0])  # clipped to the support
    assert (target @ support)[:3].tolist() == pytest.approx([-0.6, 0.0, -1.0])


def test_relabel_is_the_hand_checked_arithmetic_on_the_value_networks_values():
    recap = make_algorithm("recap", {"n_step": 3})
    policy = VLAPolicy(PolicyConfig(**CONFIG)).train()
    index = WindowIndex(horizon=2)
    episodes = [_episode("left", ["autonomous"] * 6, success=True, state=0.1, episode_id="a"),
                _episode("left", ["autonomous"] * 3 + ["intervention"] * 3 + ["autonomous"] * 4, success=False,
                         state=0.5, episode_id="b"),
                _episode("right", ["offline_demo"] * 5, success=True, episode_id="c"),
                _episode("right", ["autonomous"] * 8, success=False, state=-0.3, episode_id="d")]
    for episode in episodes:
        index.add(LabelledEpisode(episode, recap.step_labels(episode), online=True))
    assert all(item.labels.all() for item in index.episodes), "every step is a RECAP label"

    figures = recap.relabel(index, policy)
    assert figures["revalued_episodes"] == 4
    for task, positions in (("left", [0, 1]), ("right", [2, 3])):
        arrays = [index.episodes[p].episode.arrays for p in positions]
        assert not any(np.isnan(a["recap/value"]).any() for a in arrays)
        # The values are the network's, episode by episode.
        for p, a in zip(positions, arrays):
            assert a["recap/value"] == pytest.approx(recap.episode_values(index, p, policy, cached=False))
        norm = task_norm([a["recap/return"] for a in arrays])
        advantages = [n_step_advantages(a["recap/return"], a["recap/value"], norm, 3) for a in arrays]
        human = [np.isin(a["source"], [wire.SOURCE_TO_PROTO["intervention"], wire.SOURCE_TO_PROTO["offline_demo"]])
                 for a in arrays]
        expected = binarise(advantages, human, 70.0)
        for a, label, h in zip(arrays, expected, human):
            assert a["window/advantage"].tolist() == np.where(label, POSITIVE, NEGATIVE).tolist()
            assert (a["window/advantage"][h] == POSITIVE).all(), "a human step must be positive"
            assert a["window/value_target"] == pytest.approx(a["recap/return"] / norm)
            assert a["window/value_target"].min() >= -1.0 and a["window/value_target"].max() <= 0.0
    # The value network travels with each version: a restarted learner values steps the same.
    resumed = make_algorithm("recap", {"n_step": 3})
    resumed.restore(recap.artifacts(), policy)
    assert resumed.episode_values(index, 1, policy, cached=False) == pytest.approx(
        recap.episode_values(index, 1, policy, cached=False))
    # About the top 30% of each task's steps are positive (ties and human steps add to it).
    left = np.concatenate([index.episodes[p].episode.arrays["window/advantage"] for p in (0, 1)])
    assert 0.3 <= (left == POSITIVE).mean() < 0.8

    # The batch carries each window's indicator and value target at its current step.
    batch = index.batch([(1, 4), (3, 0)], ("front",), policy.tokenize)
    assert batch["advantage"].tolist() == [index.episodes[1].episode.arrays["window/advantage"][4],
                                           index.episodes[3].episode.arrays["window/advantage"][0]]
    assert batch["value_target"].tolist() == pytest.approx([index.episodes[1].episode.arrays["window/value_target"][4],
                                                            index.episodes[3].episode.arrays["window/value_target"][0]])


def test_conditioned_policy_follows_its_indicator_and_deploys_on_positive():
    """Same observation, action +0.8 when labelled positive and -0.8 when negative: the policy
    must learn both modes and run the positive one by default (what robots do)."""
    torch.manual_seed(0)
    recap = make_algorithm("recap", {"value_weight": 0.0})
    config = PolicyConfig(**{**CONFIG, "horizon": 2})
    from policy.normalize import Normalizer

    policy = VLAPolicy(config, Normalizer.fit(np.zeros((4, 2))), Normalizer.fit(np.array([[-1.0], [1.0]]))).train()
    params = list(policy.parameters()) + recap.extra_parameters(policy)
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    b = 64
    indicator = torch.tensor([POSITIVE, NEGATIVE] * (b // 2))
    batch = {"image/front": torch.zeros(b, 8, 8, 3, dtype=torch.uint8), "state": torch.zeros(b, 2),
             "action": torch.where(indicator == POSITIVE, 0.8, -0.8).float().view(b, 1, 1).expand(b, 2, 1).clone(),
             "label_mask": torch.ones(b, 2, dtype=torch.bool), "tokens": policy.tokenize(["go left"] * b),
             "advantage": indicator, "value_target": torch.zeros(b)}
    for _ in range(400):
        loss, _ = recap.loss(policy, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    policy.eval()
    observation = {"image/front": batch["image/front"][:16], "state": batch["state"][:16],
                   "tokens": batch["tokens"][:16]}
    generator = torch.Generator().manual_seed(1)
    default = policy.predict_action_chunk(observation, generator)[:, 0, 0]
    negative = policy.predict_action_chunk({**observation, "advantage": torch.full((16,), NEGATIVE)}, generator)[:, 0, 0]
    assert default.mean() > 0.5, default
    assert negative.mean() < -0.5, negative


def test_value_network_ranks_succeeding_states_above_failing_ones():
    torch.manual_seed(0)
    recap = make_algorithm("recap")
    policy = VLAPolicy(PolicyConfig(**CONFIG)).train()
    index = WindowIndex(horizon=2)
    for i in range(4):
        for episode in (_episode("left", ["autonomous"] * 10, True, state=1.0, episode_id=f"s{i}"),
                        _episode("left", ["autonomous"] * 10, False, state=-1.0, episode_id=f"f{i}")):
            index.add(LabelledEpisode(episode, recap.step_labels(episode), online=True))
    recap.relabel(index, policy)
    optimizer = torch.optim.AdamW(recap.extra_parameters(policy), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(300):
        picks = [index.windows[i] for i in rng.integers(0, len(index.windows), 32)]
        loss, _ = recap.loss(policy, index.batch(picks, ("front",), policy.tokenize))
        optimizer.zero_grad()
        loss.backward()  # only the value network's parameters are stepped
        optimizer.step()
    succeeding = recap.episode_values(index, 0, policy, cached=False)
    failing = recap.episode_values(index, 1, policy, cached=False)
    # Success episodes' normalised returns run from about -0.09 to 0, failures' from -1 to -0.9.
    assert succeeding.mean() > -0.3 and failing.mean() < -0.6, (succeeding.mean(), failing.mean())


def test_adaptive_sampler_balances_tasks_and_follows_need():
    now = [0.0]
    sampler = AdaptiveTaskSampler(fresh_s=60.0, clock=lambda: now[0])
    index = WindowIndex(horizon=1)
    index.add(LabelledEpisode(_episode("left", ["offline_demo"] * 90, True), np.ones(90, bool), online=False))
    index.add(LabelledEpisode(_episode("left", ["autonomous"] * 400, False), np.ones(400, bool), online=True))
    index.add(LabelledEpisode(_episode("right", ["offline_demo"] * 10, True), np.ones(10, bool), online=False))
    index.add(LabelledEpisode(_episode("right", ["autonomous"] * 30, False), np.ones(30, bool), online=True))
    index.add(LabelledEpisode(_episode("up", ["offline_demo"] * 90, True), np.ones(90, bool), online=False))
    index.add(LabelledEpisode(_episode("up", ["intervention"] * 10, False), np.ones(10, bool), online=True))
    rng = np.random.default_rng(0)

    def shares():
        picks = sampler.sample(index, 6000, rng)
        tasks = np.array([index.episodes[p].episode.task for p, _ in picks])
        online = np.array([index.episodes[p].online for p, _ in picks])
        return (tasks == "left").mean(), online[tasks == "left"].mean(), online[tasks == "right"].mean()

    # Task-balanced although "left" holds 490 windows, "right" 40 and "up" 100; all data fresh and no
    # outcome yet: 0.2 + 0.6 * (1 - 0.5) + 0.3 * 1 = 0.8, held to the data's share where fleet data is scarce.
    left_share, left_online, right_online = shares()
    assert left_share == pytest.approx(1 / 3, abs=0.03)
    assert left_online == pytest.approx(0.8, abs=0.03) and right_online == pytest.approx(0.75, abs=0.03)
    assert sampler.online_fractions(index)["up"] == pytest.approx(0.2)  # 10 of 100 windows: the floor
    # "left" now succeeds and its data goes stale; "right" keeps failing with fresh data.
    for _ in range(60):
        sampler.observe("left", True)
        sampler.observe("right", False)
    now[0] = 200.0
    index.add(LabelledEpisode(_episode("right", ["intervention"] * 10, False), np.ones(10, bool), online=True))
    fractions = sampler.online_fractions(index)
    # Success ~1 and no fresh data: down to the base, 0.2; demonstrations keep it from forgetting.
    assert fractions["left"] == pytest.approx(0.2, abs=1e-2)
    assert fractions["right"] == pytest.approx(0.8)  # clipped at the ceiling
    _, left_online, right_online = shares()
    assert left_online == pytest.approx(0.2, abs=0.03) and right_online == pytest.approx(0.8, abs=0.03)
    # A task with no fleet data yet draws demonstrations only.
    index.add(LabelledEpisode(_episode("down", ["offline_demo"] * 5, True), np.ones(5, bool), online=False))
    assert sampler.online_fractions(index)["down"] == 0.0


def test_recap_runs_in_the_fleet_loop(learner_thread, tmp_path):
    """Learner with --algorithm recap, one MuJoCo robot and a simulated operator: version 0 is an
    advantage-conditioned policy the robot runs, and a RECAP version trained on fleet data follows."""
    from learner.versions import VersionRegistry
    from policy import load_checkpoint
    from test_fleet_e2e import SMALL_POLICY, RobotThread

    learner = learner_thread(operators=1, trainer=dict(algorithm="recap", sampler="adaptive", min_demos=2,
                                                       bootstrap_updates=20, publish_every_updates=10, batch_size=8,
                                                       policy_overrides=SMALL_POLICY))
    robot = RobotThread(tmp_path, learner.address, "arm-1", demos=2, max_episodes=7).start()
    robot.thread.join(timeout=240)
    assert not robot.thread.is_alive(), "robot did not finish its episodes"
    autonomous = [h for h in robot.client.history if h["kind"] == "training" and "autonomous" in h["sources"]]
    assert autonomous, "the robot never ran the RECAP policy"
    registry = VersionRegistry(tmp_path / "learner")
    wait_for(lambda: (registry.latest() or 0) >= 1, 120, "a RECAP version trained on fleet data")
    checkpoint = load_checkpoint(registry.checkpoint_dir(registry.latest()))
    assert checkpoint.policy.config.advantage_conditioned and checkpoint.policy.config.deploy_advantage == POSITIVE
    info = checkpoint.meta["info"]
    assert info["algorithm"] == "recap" and info["episodes"] > 2, info
    assert set(info["online_fraction"]) == {"push_cube"}

"""RL-Co's loss (learner/algorithms/rl_co/loss.py): the denoising chain as a Gaussian MDP, PPO with a
value head, and the real-data anchor."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from conftest import wait_for
from fleet.v1 import fleet_pb2 as pb
from policy.chain import GaussianChain
from learner.algorithms.rl_co.loss import RLCoConfig, ValueHead, gae, rl_co_loss
from policy import PolicyConfig, VLAPolicy

SMALL = dict(d_model=32, n_heads=2, n_layers=1, keypoints=8, encoder_image_size=32)


def make_policy(seed: int = 0) -> VLAPolicy:
    torch.manual_seed(seed)
    return VLAPolicy(PolicyConfig(vocab=("push", "cube"), **SMALL)).eval()


def observations(policy: VLAPolicy, n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    batch = {f"image/{cam}": torch.randint(0, 255, (n, 96, 96, 3), dtype=torch.uint8, generator=g)
             for cam in policy.config.cameras}
    batch["state"] = torch.randn(n, policy.config.state_dim, generator=g)
    batch["tokens"] = policy.tokenize(["push cube"] * n)
    return batch


def rollout_batch(policy: VLAPolicy, chain: GaussianChain, n: int = 6) -> dict[str, torch.Tensor]:
    batch = observations(policy, n, seed=1)
    with torch.no_grad():
        frames, text = policy._observation(batch, augment=False)
        _, steps, logp = chain.sample(frames, text, torch.Generator().manual_seed(2))
    batch.update(chain=steps, old_logp=logp, advantage=torch.linspace(-1, 1, n), **{"return": torch.rand(n)})
    return batch


def real_batch(policy: VLAPolicy, n: int = 4) -> dict[str, torch.Tensor]:
    batch = observations(policy, n, seed=3)
    batch["action"] = torch.rand(n, policy.config.horizon, policy.config.action_dim) * 2 - 1
    batch["label_mask"] = torch.ones(n, policy.config.horizon, dtype=torch.bool)
    return batch


def head_grad(policy: VLAPolicy, loss: torch.Tensor) -> torch.Tensor:
    policy.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in policy.head.parameters() if p.grad is not None])


def test_ratio_is_one_on_the_first_minibatch_of_a_fresh_rollout():
    policy = make_policy()
    chain = GaussianChain(policy, steps=4, sigma=0.1)
    rollout = rollout_batch(policy, chain)
    loss, figures = rl_co_loss(policy, ValueHead(32), chain, rollout, real_batch(policy), RLCoConfig())
    assert figures["ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    assert figures["clip_fraction"] == 0.0 and abs(figures["approx_kl"]) < 1e-6
    # After one optimiser step on the same rollout the ratio moves: the log-likelihood is the policy's.
    optimiser = torch.optim.SGD(policy.parameters(), lr=0.05)
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    _, after = rl_co_loss(policy, ValueHead(32), chain, rollout, None, RLCoConfig())
    assert abs(after["ratio_mean"] - 1.0) > 1e-4


def test_both_the_ppo_term_and_the_real_data_anchor_carry_gradient_into_the_policy():
    policy = make_policy()
    chain = GaussianChain(policy, steps=4, sigma=0.1)
    rollout, real = rollout_batch(policy, chain), real_batch(policy)
    value_head = ValueHead(32)
    torch.manual_seed(5)
    ppo_only, _ = rl_co_loss(policy, value_head, chain, rollout, None, RLCoConfig())
    g_ppo = head_grad(policy, ppo_only)
    torch.manual_seed(5)
    anchor_only = policy.compute_loss(real)
    g_anchor = head_grad(policy, anchor_only)
    torch.manual_seed(6)
    both, figures = rl_co_loss(policy, value_head, chain, rollout, real, RLCoConfig(beta=0.1))
    g_both = head_grad(policy, both)
    assert g_ppo.norm() > 0 and g_anchor.norm() > 0
    assert "anchor_loss" in figures
    # The anchor's gradient is really in the total (RLinf#1368 logged it without back-propagating).
    assert (g_both - g_ppo).norm() > 1e-3 * g_anchor.norm()
    # The encoder learns from both terms too (it is not frozen here).
    policy.zero_grad()
    both2, _ = rl_co_loss(policy, value_head, chain, rollout, real, RLCoConfig())
    both2.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.encoder_parameters())


def test_the_chain_log_likelihood_matches_the_sampler_and_a_gaussian_by_hand():
    policy = make_policy()
    chain = GaussianChain(policy, steps=3, sigma=0.2)
    batch = observations(policy, 2, seed=4)
    with torch.no_grad():
        frames, text = policy._observation(batch, augment=False)
        chunk, steps, logp = chain.sample(frames, text, torch.Generator().manual_seed(0))
        again = chain.log_prob(frames, text, steps)
    assert steps.shape == (2, 4, policy.config.horizon, policy.config.action_dim)
    assert torch.equal(chunk, steps[:, -1])
    assert logp.shape == (2, 3)  # one log-likelihood per denoising step
    torch.testing.assert_close(again, logp)
    # One step by hand: log N(x; mu, s^2) summed over the executed tokens' dimensions.
    c = policy.config
    executed = slice(c.past_tokens, c.past_tokens + c.n_action_steps)
    assert chain.scored == executed and executed.stop < c.horizon
    with torch.no_grad():
        mean = chain._mean(steps[:, 0], 0, frames, text)
    x, mu = steps[0, 1, executed], mean[0, executed]
    d = mu.numel()
    by_hand = (-((x - mu) ** 2).sum() / (2 * 0.04) - d / 2 * np.log(2 * np.pi * 0.04)).item()
    assert again[0, 0].item() == pytest.approx(by_hand, rel=1e-5)
    # A token the robot never executes is not scored where it is an output (the last step's
    # input x_1 still conditions every token's mean, so the chain before it counts).
    moved = steps.clone()
    moved[:, -1, executed.stop:] += 1.0
    with torch.no_grad():
        torch.testing.assert_close(chain.log_prob(frames, text, moved), again)
        moved[:, -1, executed] += 0.1
        assert (chain.log_prob(frames, text, moved)[:, -1] < again[:, -1]).all()


def test_chunk_rewards_add_potential_based_shaping_on_the_distance_to_the_goal():
    from learner.algorithms.rl_co.loss import chunk_rewards

    step_rewards = np.array([0.0, 0.0, 0.0, 0.0, 1.0])
    distance = np.array([[0.20, 0.18], [0.18, 0.15], [0.15, 0.10], [0.10, 0.04], [0.04, 0.02]])
    starts, ends = np.array([0, 2, 4]), np.array([2, 4, 5])
    got = chunk_rewards(step_rewards, distance, starts, ends, gamma=0.9, shaping=10.0)
    np.testing.assert_allclose(got, [10 * (0.20 - 0.9 * 0.15), 10 * (0.15 - 0.9 * 0.04), 1.0 + 10 * (0.04 - 0.9 * 0.02)],
                               rtol=1e-5)
    # Undiscounted, the shaping telescopes: the episode's return is the success plus the distance closed.
    flat = chunk_rewards(step_rewards, distance, starts, ends, gamma=1.0, shaping=10.0)
    assert flat.sum() == pytest.approx(1.0 + 10 * (0.20 - 0.02))
    # No distance (a task without the measure) or shaping off: the task reward alone.
    np.testing.assert_allclose(chunk_rewards(step_rewards, None, starts, ends, 0.9, 10.0), [0, 0, 1])
    nan = np.full_like(distance, np.nan)
    np.testing.assert_allclose(chunk_rewards(step_rewards, nan, starts, ends, 0.9, 10.0), [0, 0, 1])
    np.testing.assert_allclose(chunk_rewards(step_rewards, distance, starts, ends, 0.9, 0.0), [0, 0, 1])


def test_group_advantages_use_a_leave_one_out_baseline_per_chunk_index():
    from learner.algorithms.rl_co.loss import group_advantages

    rewards = [np.array([0.0, 1.0]), np.array([0.0, 0.0, 0.5]), np.array([2.0]), np.array([1.0, 1.0])]
    groups = ["a", "a", "b", "c"]
    got = group_advantages(rewards, groups, gamma=0.5)
    # Returns-to-go (gamma 0.5): [0.5, 1.0], [0.125, 0.25, 0.5]; each minus the other's, 0 past its end.
    np.testing.assert_allclose(got[0], [0.5 - 0.125, 1.0 - 0.25])
    np.testing.assert_allclose(got[1], [0.125 - 0.5, 0.25 - 1.0, 0.5 - 0.0])
    assert got[2] is None and got[3] is None  # alone in their groups: the value head's GAE applies
    three = group_advantages([np.array([1.0]), np.array([0.0]), np.array([0.5])], [0, 0, 0], gamma=0.9)
    np.testing.assert_allclose(np.concatenate(three), [1.0 - 0.25, 0.0 - 0.75, 0.5 - 0.5])


def test_gae_on_a_small_case():
    rewards = np.array([0.0, 0.0, 1.0])
    values = np.array([0.5, 0.6, 0.7])
    adv, ret = gae(rewards, values, last_value=0.0, done=True, gamma=0.9, lam=0.8)
    d2 = 1.0 - 0.7
    d1 = 0.0 + 0.9 * 0.7 - 0.6
    d0 = 0.0 + 0.9 * 0.6 - 0.5
    a2 = d2
    a1 = d1 + 0.9 * 0.8 * a2
    a0 = d0 + 0.9 * 0.8 * a1
    np.testing.assert_allclose(adv, [a0, a1, a2], rtol=1e-6)
    np.testing.assert_allclose(ret, adv + values, rtol=1e-6)
    cut, _ = gae(rewards, values, last_value=2.0, done=False, gamma=0.9, lam=0.8)
    assert cut[-1] == pytest.approx(1.0 + 0.9 * 2.0 - 0.7)  # a cut-off episode bootstraps


def publish_rl_version(data_dir, version: int = 0, seed: int = 0) -> VLAPolicy:
    from learner.versions import VersionRegistry
    from policy import save_checkpoint
    from test_float_fleet import VOCAB

    torch.manual_seed(seed)
    policy = VLAPolicy(PolicyConfig(vocab=VOCAB, **SMALL)).eval()
    registry = VersionRegistry(data_dir)
    save_checkpoint(registry.checkpoint_dir(version), policy, version, info={"rl": {"denoise_steps": 4, "sigma": 0.1}})
    registry.add(version, {"test": True})
    registry.publish(version, note="rl test")
    registry.close()
    return policy


def test_sim_robots_stream_the_chain_and_the_learner_scores_it_identically(learner_thread, tmp_path):
    from learner.store import StoreReader
    from test_fleet_e2e import RobotThread

    learner = learner_thread(train=False)
    data_dir = tmp_path / "learner"
    publish_rl_version(data_dir)
    robot = RobotThread(tmp_path, learner.address, "sim-1", max_episodes=1, help_gate="off").start()
    robot.thread.join(timeout=120)
    assert robot.client.history and robot.client.history[0]["kind"] == "training"
    reader = StoreReader(data_dir)
    wait_for(lambda: reader.complete_episodes(), 60, "the episode stored")
    episode = reader.load_episode(reader.complete_episodes()[0])
    reader.close()
    a = episode.arrays
    planned = np.flatnonzero(a["extra/rl/planned"])
    policy = robot.client.checkpoint.policy  # the weights the robot ran, as the learner loads them
    assert planned.tolist() == list(range(0, episode.num_steps, policy.config.n_action_steps))
    chain = GaussianChain(policy, steps=4, sigma=0.1)
    batch = {f"image/{cam}": torch.from_numpy(a[f"image/{cam}"][planned]) for cam in policy.config.cameras}
    batch["state"] = torch.from_numpy(a["state"][planned])
    batch["tokens"] = policy.tokenize([robot.client.driver.tasks["push_cube"]] * len(planned))
    with torch.no_grad():
        frames, text = policy._observation(batch, augment=False)
        rescored = chain.log_prob(frames, text, torch.from_numpy(a["extra/rl/chain"][planned]))
    np.testing.assert_allclose(rescored.numpy(), a["extra/rl/logp"][planned], rtol=1e-4, atol=1e-2)
    # The task's distance to the goal travels with every step, before and after it (reward shaping).
    distance = a["extra/rl/distance"]
    assert distance.shape == (episode.num_steps, 2) and np.isfinite(distance).all()
    np.testing.assert_allclose(distance[1:, 0], distance[:-1, 1], atol=1e-6)
    # The executed actions are the chains' last states, unnormalised and clipped.
    first = policy.action_norm.unnormalize(torch.from_numpy(a["extra/rl/chain"][planned[0], -1]))[0].numpy()
    np.testing.assert_allclose(a["action"][0], np.clip(first, -1, 1), atol=1e-5)


def test_a_real_proxy_robot_refuses_to_serve_rl_rollouts(learner_thread, tmp_path):
    from learner.versions import VersionRegistry
    from policy import load_checkpoint
    from robot_client.driver import SimDriver
    from robot_client.loop import RLRefused, RobotClient, RobotConfig
    from robot_client.teleop import ScriptedOperator

    learner = learner_thread(train=False)
    publish_rl_version(tmp_path / "learner")
    driver = SimDriver(["push_cube"], variant="real-proxy")
    assert driver.robot_type == "real_proxy_cartesian_arm" and not driver.serves_rl
    sim_driver = SimDriver(["push_cube"])
    assert sim_driver.serves_rl
    sim_driver.close()
    client = RobotClient(RobotConfig(robot_id="real-1", tasks=("push_cube",), learner=learner.address,
                                     token="test-token-0123456789", work_dir=tmp_path / "real-1", realtime=False,
                                     eval_seeds=(0,), help_gate="off", max_episodes=1),
                         driver, ScriptedOperator(driver))
    client.checkpoint = load_checkpoint(VersionRegistry(tmp_path / "learner").checkpoint_dir(0))
    assert client.rl_sampling == (4, 0.1)
    with pytest.raises(RLRefused, match="does not serve RL rollouts"):
        client.run_episode("training", seed=1, task="push_cube")
    client.checkpoint = None
    client.config.max_episodes = None
    runner = threading.Thread(target=client.run, daemon=True)  # the fleet loop, RL version arriving
    runner.start()
    wait_for(lambda: client.history, 60, "the evaluation episode")
    time.sleep(3.0)  # time enough for training episodes, were any allowed
    assert runner.is_alive(), "the robot loop died"  # it waits, idle, for a version it may run
    assert client._status["mode"] == pb.ROBOT_MODE_IDLE
    client.stopped.set()
    runner.join(30)
    assert [h["kind"] for h in client.history] == ["evaluation"]  # it evaluated the version, nothing more


def test_rl_co_runs_in_the_fleet_loop_stage_one_then_ppo_with_the_anchor(learner_thread, tmp_path):
    """Real-proxy robots give demonstrations and evaluate; sim robots give demonstrations and
    RL rollouts; the trainer co-trains version 0, then publishes PPO versions."""
    from learner.versions import VersionRegistry
    from policy import load_checkpoint
    from test_fleet_e2e import SMALL_POLICY, RobotThread

    learner = learner_thread(trainer=dict(
        algorithm="rl_co", min_demos=4, bootstrap_updates=30, batch_size=8, policy_overrides=SMALL_POLICY,
        algorithm_config=dict(episodes_per_iteration=2, minibatch=32, real_batch=8)))
    real = RobotThread(tmp_path, learner.address, "real-1", variant="real-proxy", demos=2, eval_seeds=(0, 1),
                       help_gate="off", max_episodes=10**6, max_steps=40).start()
    sim = RobotThread(tmp_path, learner.address, "sim-1", demos=2, help_gate="off", max_episodes=10**6,
                      max_steps=40).start()
    registry = VersionRegistry(tmp_path / "learner")
    try:
        wait_for(lambda: (registry.latest() or 0) >= 2, 300, "two PPO versions after version 0")
    finally:
        real.stop()
        sim.stop()
    v0 = load_checkpoint(registry.checkpoint_dir(0)).meta["info"]
    v1 = load_checkpoint(registry.checkpoint_dir(1)).meta["info"]
    registry.close()
    assert v0["algorithm"] == "rl_co" and v0["rl"] == {"denoise_steps": 4, "sigma": 0.1, "group": 4}
    assert v1["rl_iteration"] == 1 and v1["rollout_episodes"] >= 2
    assert v1["grouped"] == 1.0  # the sim robot ran its rollouts in a group of one seed
    assert v1["first_ratio"] == pytest.approx(1.0, abs=1e-3)  # the robot's log-likelihoods, rescored
    assert v1["anchor_loss"] > 0  # the real-data anchor took part
    kinds = {h["kind"] for h in real.client.history}
    assert kinds <= {"demonstration", "evaluation"} and "evaluation" in kinds  # never an RL rollout
    assert any(h["kind"] == "training" for h in sim.client.history)

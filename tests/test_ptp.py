"""Long-context policy with past-token prediction: loss mask, cached embeddings, verification."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fleet.v1 import fleet_pb2 as pb
from learner.embeddings import EmbeddingCache
from learner.samplers import LabelledEpisode, WindowIndex
from core.episode import EpisodeArrays
from learner.store import EpisodeStore
from learner.trainer import Trainer, TrainerConfig, fit_offline
from policy import PolicyConfig, PolicyRunner, VLAPolicy, load_checkpoint, save_checkpoint
from policy.normalize import Normalizer

TINY = dict(d_model=32, n_heads=2, n_layers=1, keypoints=8, encoder_image_size=16, image_size=32,
            cameras=("front",), state_dim=3, action_dim=2, vocab=("press",))


def tiny_episode(steps: int, seed: int, name: str = "e") -> EpisodeArrays:
    rng = np.random.default_rng(seed)
    arrays = {"image/front": rng.integers(0, 255, (steps, 32, 32, 3), dtype=np.uint8),
              "state": rng.normal(size=(steps, 3)).astype(np.float32),
              "action": rng.uniform(-1, 1, (steps, 2)).astype(np.float32),
              "source": np.full(steps, pb.ACTION_SOURCE_OFFLINE_DEMO, np.int8)}
    return EpisodeArrays("robot", name, "press_button", "press", "demonstration", -1, True, arrays)


def token_gradients(config: PolicyConfig) -> np.ndarray:
    """Which of the head's T output tokens the loss sends gradient to (all labels present)."""
    torch.manual_seed(0)
    policy = VLAPolicy(config)
    captured = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        captured["out"] = output

    policy.head.register_forward_hook(keep)
    b = 4
    batch = {"image/front": torch.randint(0, 255, (b, config.obs_steps, 32, 32, 3), dtype=torch.uint8),
             "state": torch.randn(b, config.obs_steps, 3), "tokens": policy.tokenize(["press"] * b),
             "action": torch.rand(b, config.horizon, 2), "label_mask": torch.ones(b, config.horizon, dtype=torch.bool)}
    policy.compute_loss(batch).backward()
    return (captured["out"].grad.abs().sum(dim=(0, 2)) > 0).numpy()


def test_ptp_loss_reaches_exactly_the_masked_tokens():
    config = PolicyConfig(obs_steps=4, horizon=8, n_action_steps=2, **TINY)  # 3 past tokens
    assert token_gradients(config).tolist() == [False] * 3 + [True] * 5  # off: current and future only
    on = dataclasses.replace(config, past_token_prediction=True)
    assert token_gradients(on).tolist() == [True] * 8  # on: every token
    last_two = dataclasses.replace(on, ptp_past_tokens=2)
    assert token_gradients(last_two).tolist() == [False] + [True] * 7  # on, the last k = 2 past tokens


def test_long_context_batches_hold_the_observation_window_with_the_first_frame_repeated():
    episode = tiny_episode(6, 0)
    index = WindowIndex(horizon=5, past=2)
    index.add(LabelledEpisode(episode, np.ones(6, bool), online=False))
    batch = index.batch([(0, 1), (0, 4)], ("front",), lambda texts: torch.zeros(len(texts), 1, dtype=torch.long))
    frames = episode.arrays["image/front"]
    assert batch["image/front"].shape == (2, 3, 32, 32, 3)
    assert np.array_equal(batch["image/front"][0].numpy(), frames[[0, 0, 1]])  # before the start: frame 0
    assert np.array_equal(batch["image/front"][1].numpy(), frames[[2, 3, 4]])
    assert np.array_equal(batch["state"][1].numpy(), episode.arrays["state"][[2, 3, 4]])


def test_cached_embeddings_equal_a_fresh_pass_of_the_frozen_encoder(tmp_path):
    EpisodeStore(tmp_path).close()  # the learner's store, where the cache lives
    episodes = [tiny_episode(30, seed, f"e{seed}") for seed in range(3)]
    target = dict(TINY, obs_steps=4, horizon=8, past_token_prediction=True)
    config = TrainerConfig(data_dir=tmp_path, policy_overrides=target, short_context=dict(obs_steps=1, horizon=5),
                           batch_size=8)
    trainer = Trainer(config)
    for episode in episodes:
        trainer.add_episode(episode, online=False)
    trainer._build_policy()
    trainer.bootstrap(5)
    encoder = trainer.ema
    cache = trainer.start_head_training(encoder)
    policy = trainer.policy
    assert policy.encoder_frozen and not any(p.requires_grad for p in policy.encoder_parameters())
    assert all(p.requires_grad for p in policy.head.parameters())

    # What the head trains on is what the robot's encoder computes from full-size camera frames.
    for item, episode in zip(trainer.index.episodes, episodes):
        fresh = policy.embed_frames({"front": torch.from_numpy(episode.arrays["image/front"])},
                                    torch.from_numpy(episode.arrays["state"])).detach().numpy()
        assert np.allclose(item.episode.arrays["frames"], fresh, atol=1e-5)
        assert not any(k.startswith("image/") for k in item.episode.arrays)  # images dropped after embedding
    batch = trainer.index.batch(trainer.index.windows[:16], ("front",), policy.tokenize, cached=True)
    assert batch["frames"].shape == (16, 4, 2, 32)

    # The cache is on disk under the encoder's id: a restarted trainer reads it instead of recomputing.
    assert cache.computed == 3 and (tmp_path / "embeddings" / policy.encoder_id()).is_dir()
    again = EmbeddingCache(policy, tmp_path)
    cached = again.frames(episodes[0])
    assert np.array_equal(cached, cache.frames(episodes[0])) and again.loaded == 1
    # A changed encoder has another id, and opening its cache drops the stale one.
    with torch.no_grad():
        policy.state_in[0].weight.add_(0.1)
    changed = EmbeddingCache(policy, tmp_path)
    assert changed.encoder_id != cache.encoder_id
    assert not (tmp_path / "embeddings" / cache.encoder_id).exists()
    assert not np.allclose(changed.frames(episodes[0]), cached) and changed.computed == 1


def test_head_training_changes_the_head_and_leaves_the_encoder_alone():
    episodes = [tiny_episode(20, seed, f"e{seed}") for seed in range(2)]
    config = TrainerConfig(data_dir=None, batch_size=8, head_updates=10, short_context=dict(obs_steps=1, horizon=5),
                           policy_overrides=dict(TINY, obs_steps=3, horizon=6, past_token_prediction=True))
    trainer = Trainer(config)
    for episode in episodes:
        trainer.add_episode(episode, online=False)
    trainer._build_policy()
    trainer.bootstrap(3)
    trainer.start_head_training(trainer.ema)
    encoder_before = {k: v.clone() for k, v in trainer.policy.state_in.state_dict().items()}
    head_before = trainer.policy.head.out[1].weight.clone()
    trainer.bootstrap(10)
    assert all(torch.equal(v, trainer.policy.state_in.state_dict()[k]) for k, v in encoder_before.items())
    assert not torch.equal(head_before, trainer.policy.head.out[1].weight)

    policy = fit_offline(episodes, 3, config)  # the same recipe end to end: stage 1, embed, stage 3
    assert policy.config.obs_steps == 3 and policy.config.past_token_prediction and policy.encoder_frozen


def constructed_policy(candidates: np.ndarray) -> VLAPolicy:
    """A real long-context policy whose sampler returns `candidates` (normalised chunks), in order."""
    n, horizon, _ = candidates.shape
    config = PolicyConfig(obs_steps=4, horizon=horizon, n_action_steps=2, past_token_prediction=True,
                          verify_candidates=n, **TINY)
    policy = VLAPolicy(config, action_norm=Normalizer(np.full(2, -2.0, np.float32), np.full(2, 2.0, np.float32)))
    policy.eval()
    seen = {}

    def sample(frames, text, generator=None):
        seen["frames"] = frames
        return torch.as_tensor(candidates[:frames.shape[0]])

    policy.sample_normalized = sample
    policy.seen = seen
    return policy


def test_self_verification_picks_the_candidate_whose_past_matches_what_was_executed():
    rng = np.random.default_rng(3)
    n, horizon, past = 6, 7, 3
    candidates = rng.uniform(-0.5, 0.5, (n, horizon, 2)).astype(np.float32)
    policy = constructed_policy(candidates)
    # The robot executed candidate 4's past tokens (raw units: the normaliser maps [-2, 2] to [-1, 1]).
    executed = 2.0 * candidates[4, :past]
    frames, text = torch.zeros(1, 4, 2, 32), torch.zeros(1, 32)
    chunk, distances = policy.verified_chunk(frames, text, executed, n)
    assert int(np.argmin(distances)) == 4 and distances[4] == pytest.approx(0.0, abs=1e-10)
    assert np.allclose(chunk, 2.0 * candidates[4])
    assert policy.seen["frames"].shape[0] == n  # one batched pass over all candidates
    # Only the last k executed actions are known early in an episode: they are compared with the last k
    # past tokens. Candidate 1 matches those two even though its first past token is far off.
    candidates[1, 1:past] = candidates[4, 1:past] + 1e-3
    candidates[1, 0] = candidates[4, 0] + 0.9
    chunk, distances = policy.verified_chunk(frames, text, executed[1:], n)
    assert int(np.argmin(distances)) in (1, 4) and distances[4] == pytest.approx(0.0, abs=1e-10)
    chunk, distances = policy.verified_chunk(frames, text, executed, n)
    assert int(np.argmin(distances)) == 4  # with all three, candidate 1's first token rules it out


def test_runner_keeps_rolling_buffers_and_verifies_against_executed_actions():
    n, horizon = 4, 7
    candidates = np.zeros((n, horizon, 2), np.float32)
    for j in range(n):
        candidates[j, :, 0] = 0.1 * j  # candidate j always does 0.2 * j (raw) on joint 0
    policy = constructed_policy(candidates)
    runner = PolicyRunner(policy, seed=0)
    images = {"front": np.zeros((32, 32, 3), np.uint8)}

    def act(step):
        return runner.act(images, np.full(3, float(step), np.float32), "press")

    first = act(0)  # nothing executed yet: no verification, candidate 0
    assert runner.last_distances is None and first[0] == pytest.approx(0.0)
    window = policy.seen["frames"][0]
    assert window.shape == (4, 2, 32) and all(torch.equal(window[0], window[i]) for i in range(4))
    runner.executed_instead(np.array([0.6, 0.0], np.float32))  # an operator drove with candidate 3's action
    act(1)
    runner.executed_instead(np.array([0.6, 0.0], np.float32))
    action = act(2)  # plans again: the executed past picks candidate 3
    assert action[0] == pytest.approx(0.6) and int(np.argmin(runner.last_distances)) == 3
    window = policy.seen["frames"][0]  # frames 0, 0, 1, 2: the first frame stands in before the start
    assert torch.equal(window[0], window[1]) and not torch.equal(window[1], window[2])
    assert len(runner.frames) == 4 and len(runner.executed) == 3
    runner.reset(1)
    assert not runner.frames and not runner.executed


def test_long_context_checkpoints_round_trip_with_their_verification_settings(tmp_path):
    config = PolicyConfig(obs_steps=5, horizon=8, n_action_steps=2, past_token_prediction=True, verify_candidates=7,
                          **TINY)
    policy = VLAPolicy(config).eval()
    policy.freeze_encoder()
    loaded = load_checkpoint(save_checkpoint(tmp_path / "v0", policy, 0)).policy
    assert loaded.config == config and loaded.encoder_id() == policy.encoder_id()
    with pytest.raises(ValueError, match="obs_steps >= 2"):
        PolicyConfig(verify_candidates=3)
    with pytest.raises(ValueError, match="frames per sample"):
        batch = {"frames": torch.zeros(1, 2, 2, 32), "tokens": policy.tokenize(["press"])}
        policy.predict_action_chunk(batch)


def test_fleet_runs_the_long_context_policy_trained_in_stages(learner_thread, tmp_path):
    from conftest import wait_for
    from learner.versions import VersionRegistry
    from test_fleet_e2e import SMALL_POLICY, RobotThread

    overrides = dict(SMALL_POLICY, obs_steps=4, horizon=8, past_token_prediction=True, verify_candidates=3)
    learner = learner_thread(operators=1, trainer=dict(
        min_demos=2, bootstrap_updates=10, head_updates=10, publish_every_updates=10, batch_size=8,
        policy_overrides=overrides, short_context=dict(obs_steps=1, horizon=5)))
    robot = RobotThread(tmp_path, learner.address, "arm-1", demos=2, max_episodes=6).start()
    data_dir = tmp_path / "learner"
    registry = VersionRegistry(data_dir)
    try:
        wait_for(lambda: robot.client.version is not None and robot.client.version >= 0, 180, "version 0 on the robot")
        policy = robot.client.checkpoint.policy
        assert policy.config.obs_steps == 4 and policy.config.verify_candidates == 3
        # The version ships FLOAT's reference bank: one feature (To x F x d) per 8-step chunk of each demo.
        bank = robot.client.checkpoint.artifacts["float_bank"]
        assert bank["sequences"].shape[0] == 2 and bank["sequences"].shape[2] == 4 * 3 * SMALL_POLICY["d_model"]
        # Stage 2 left its cache in the store, under the id of the published encoder.
        assert (data_dir / "embeddings" / policy.encoder_id()).is_dir()
        # Fleet episodes are embedded as they arrive and a later version is trained on them.
        wait_for(lambda: (registry.latest() or 0) >= 1, 180, "a version trained on fleet data")
        assert len(list((data_dir / "embeddings" / policy.encoder_id()).iterdir())) > 2
    finally:
        robot.stop()
        registry.close()

"""Base policies (policy/pretrained.py): what version 0 starts from, and the one the project ships."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from core.episode import EpisodeArrays
from fleet.v1 import fleet_pb2 as pb
from learner.trainer import Trainer, TrainerConfig
from policy import PolicyConfig, VLAPolicy, load_checkpoint, save_checkpoint
from policy.normalize import Normalizer
from policy.pretrained import SHIPPED_BASE, BaseMismatch, base_tasks, start_from_base

SMALL = dict(cameras=("front",), image_size=32, encoder_image_size=16, d_model=32, n_heads=2, keypoints=8)


def small_base(tmp_path, vocab=("reach", "the", "ball"), tasks=("reach",)):
    torch.manual_seed(0)
    policy = VLAPolicy(PolicyConfig(vocab=vocab, **SMALL), Normalizer(-2 * np.ones(7), 3 * np.ones(7)),
                       Normalizer(-np.ones(4), np.ones(4)))
    for p in policy.parameters():
        p.data.normal_()  # weights no fresh init could have
    return load_checkpoint(save_checkpoint(tmp_path / "base", policy, 0, info={"tasks": list(tasks)}))


def episode(task: str, instruction: str, steps: int = 12) -> EpisodeArrays:
    rng = np.random.default_rng(0)
    arrays = {"image/front": rng.integers(0, 255, (steps, 32, 32, 3), dtype=np.uint8),
              "state": rng.normal(size=(steps, 7)).astype(np.float32),
              "action": rng.uniform(-1, 1, (steps, 4)).astype(np.float32),
              "source": np.full(steps, pb.ACTION_SOURCE_OFFLINE_DEMO, np.int8)}
    return EpisodeArrays("r", f"{task}-0", task, instruction, "demonstration", -1, True, arrays)


def test_a_policy_started_from_a_base_keeps_its_weights_words_and_units(tmp_path):
    base = small_base(tmp_path)
    config = PolicyConfig(vocab=("push", "the", "cube"), **SMALL)
    policy, report = start_from_base(VLAPolicy, config, base)
    old = base.policy
    for name in ("camera_encoders", "state_in", "head"):
        for (key, mine), theirs in zip(getattr(policy, name).state_dict().items(), getattr(old, name).state_dict().values()):
            assert torch.equal(mine, theirs), f"{name}.{key}"
    # "the" keeps its embedding; "push" and "cube" are new words with embeddings of their own.
    assert torch.equal(policy.word_embedding.weight[policy.word_index["the"]],
                       old.word_embedding.weight[old.word_index["the"]])
    assert set(report["new_words"]) == {"push", "cube"}
    assert set(policy.config.vocab) == {"reach", "the", "ball", "push", "cube"}
    assert torch.equal(policy.state_norm.centre, old.state_norm.centre)


def test_a_base_for_another_embodiment_is_refused_with_the_reason(tmp_path):
    base = small_base(tmp_path)
    with pytest.raises(BaseMismatch, match="state_dim 7 != 9"):
        start_from_base(VLAPolicy, PolicyConfig(vocab=("x",), **dict(SMALL, state_dim=9)), base)


def test_a_base_with_other_keypoint_maps_does_not_fit_and_old_checkpoints_keep_theirs(tmp_path):
    base = small_base(tmp_path)  # keypoint_stride 2, the default
    with pytest.raises(BaseMismatch, match="keypoint_stride 2 != 4"):
        start_from_base(VLAPolicy, PolicyConfig(vocab=("x",), **dict(SMALL, keypoint_stride=4)), base)
    old = {k: v for k, v in PolicyConfig(**SMALL).to_dict().items() if k != "keypoint_stride"}
    assert PolicyConfig.from_dict(old).keypoint_stride == 4  # saved before the field: 12 x 12 maps at 48 px
    maps = VLAPolicy(PolicyConfig(vocab=("x",), **SMALL)).camera_encoders["front"].conv(torch.zeros(1, 3, 16, 16))
    assert maps.shape[-2:] == (8, 8)  # 16 px encoder input / stride 2


def test_version_zero_starts_from_the_configured_base_and_records_it(tmp_path, caplog):
    base = small_base(tmp_path)
    config = TrainerConfig(data_dir=None, bootstrap_updates=2, batch_size=4, base=str(tmp_path / "base"),
                           policy_overrides=dict(SMALL), prefetch=0)
    trainer = Trainer(config)
    trainer.add_episode(episode("reach", "reach the ball"), online=False)
    with caplog.at_level(logging.WARNING, logger="fleetlearn.trainer"):
        trainer._build_policy()
    assert trainer.base_info["base_tasks"] == ["reach"]
    assert "trained on this fleet's task" in caplog.text  # the base saw the fleet's task: said plainly
    assert torch.equal(trainer.policy.head.position.detach(), base.policy.head.position)
    trainer.batches.close()


def test_the_default_base_that_does_not_fit_falls_back_to_scratch(tmp_path, caplog):
    config = TrainerConfig(data_dir=None, bootstrap_updates=2, batch_size=4, policy_overrides=dict(SMALL), prefetch=0)
    trainer = Trainer(config)
    trainer.add_episode(episode("reach", "reach the ball"), online=False)
    with caplog.at_level(logging.WARNING, logger="fleetlearn.trainer"):
        trainer._build_policy()
    assert trainer.base_info["base"] == "none" and "base_skipped" in trainer.base_info
    assert "starts from scratch" in caplog.text
    trainer.batches.close()
    explicit = Trainer(dataclasses.replace(config, base=str(SHIPPED_BASE)))
    explicit.add_episode(episode("reach", "reach the ball"), online=False)
    with pytest.raises(BaseMismatch):  # asked for by name, a base that does not fit is an error
        explicit._build_policy()
    explicit.batches.close()


def test_the_shipped_base_loads_is_small_and_never_saw_the_demos_task():
    base = load_checkpoint(SHIPPED_BASE)  # verifies every file's hash
    size = sum(p.stat().st_size for p in SHIPPED_BASE.rglob("*") if p.is_file())
    assert size < 30e6
    tasks = base_tasks(base)
    assert "push_cube" not in tasks and len(tasks) >= 3
    info = base.meta["info"]
    assert info["recipe"].startswith("fleet pretrain ") and info["final_loss"] < 0.1
    c = base.policy.config
    assert (c.cameras, c.image_size, c.state_dim, c.action_dim) == (("front", "wrist"), 96, 7, 4)
    assert c.keypoint_stride == PolicyConfig().keypoint_stride  # it fits the default policy

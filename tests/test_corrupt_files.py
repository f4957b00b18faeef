"""Corrupt files are quarantined, never fatal (issue 24): a published version whose metadata is
cut short, a checkpoint whose weights are, a chunk file of a stored episode. Each is moved to
DATA/quarantine/ and counted, and the learner and its trainer go on with what is sound."""

from __future__ import annotations

import json
import logging
import time

import grpc
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from conftest import TOKEN, wait_for
from core import wire
from fleet.v1 import fleet_pb2 as pb
from fleet.v1 import fleet_pb2_grpc as pb_grpc
from learner.quarantine import Quarantine
from learner.store import SqliteIndex
from learner.trainer import Trainer, TrainerConfig
from learner.versions import VersionRegistry
from policy import PolicyConfig, VLAPolicy, save_checkpoint
from policy.checkpoint import META_FILE, WEIGHTS_FILE, sha256_file
from robot_client.uplink import Uplink, UplinkConfig
from test_pretrained import SMALL, episode

AUTH = (("authorization", f"Bearer {TOKEN}"),)


def trainer_for(data_dir) -> Trainer:
    return Trainer(TrainerConfig(data_dir=data_dir, bootstrap_updates=3, batch_size=4, base="none",
                                 policy_overrides=dict(SMALL), prefetch=0, min_demos=1))


def two_versions(data_dir) -> dict[str, torch.Tensor]:
    """A store holding versions 0 and 1 (1 published last), as a trainer makes them; returns v0's weights."""
    data_dir.mkdir(parents=True)
    SqliteIndex(data_dir).close()
    trainer = trainer_for(data_dir)
    trainer.add_episode(episode("reach", "reach the ball"), online=False)
    trainer.train_version_zero()
    assert trainer.publish("version 0", {}) == 0
    v0 = {k: v.clone() for k, v in trainer.ema.state_dict().items()}
    trainer.train_step()
    assert trainer.publish("version 1", {}) == 1
    trainer.batches.close()
    return v0


def cut_short(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_version_whose_metadata_is_cut_short_is_quarantined_and_the_learner_starts(learner_thread, tmp_path):
    data = tmp_path / "learner"
    two_versions(data)
    cut_short(VersionRegistry(data).checkpoint_dir(1) / META_FILE)

    learner = learner_thread(train=False)  # on the same data directory
    publisher = learner.learner.publisher
    assert publisher.current is not None and publisher.current.version == 0  # the last sound version
    registry = VersionRegistry(data)
    current = registry.current()
    assert (current.version, current.rollback) == (0, True) and "version 1 quarantined" in current.note
    entries = Quarantine(data).entries()
    assert [(e["kind"], e["path"]) for e in entries] == [("checkpoints", "checkpoints/v000001")]
    assert not registry.checkpoint_dir(1).exists()
    assert (data / "quarantine" / "checkpoints" / "checkpoints" / "v000001" / META_FILE).exists()


def test_the_trainer_resumes_from_the_newest_version_that_loads_and_numbers_on(tmp_path):
    data = tmp_path / "learner"
    v0 = two_versions(data)
    cut_short(VersionRegistry(data).checkpoint_dir(1) / WEIGHTS_FILE)

    trainer = trainer_for(data)
    try:
        assert trainer.resume_or_wait_for_demos(lambda: False)
        assert trainer.version == 1  # the next version is 2: no number is written twice
        for name, value in trainer.policy.state_dict().items():
            assert torch.equal(value, v0[name]), name
        assert [e["path"] for e in Quarantine(data).entries()] == ["checkpoints/v000001"]
    finally:
        trainer.batches.close()


def demo_chunk(episode_id: str, steps: int = 6) -> pb.EpisodeChunk:
    rng = np.random.default_rng(len(episode_id))
    return pb.EpisodeChunk(
        robot_id="arm", episode_id=episode_id, sequence=0, kind=pb.EPISODE_KIND_DEMONSTRATION, task="reach",
        instruction="reach the ball", policy_version=-1, episode_end=True,
        outcome=pb.EpisodeOutcome(num_steps=steps, success=True),
        steps=[wire.step_to_proto(i, 0.1 * i, {"front": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)},
                                  rng.normal(size=7).astype(np.float32), rng.uniform(-1, 1, 4).astype(np.float32),
                                  None, "offline_demo", 0.0, i == steps - 1) for i in range(steps)])


def test_a_cut_short_chunk_file_is_quarantined_and_the_trainer_learns_from_the_rest(learner_thread):
    learner = learner_thread(train=False)
    data = learner.config.data_dir
    channel = grpc.insecure_channel(learner.address)
    stub = pb_grpc.FleetLearnerStub(channel)
    try:
        stub.Register(pb.RegisterRequest(robot_id="arm", embodiment=wire.embodiment_to_proto(
            "arm", {"front": (32, 32, 3)}, 7, 4, 10)), metadata=AUTH, timeout=10)
        for episode_id in ("sound", "torn"):
            list(stub.StreamEpisodes(iter([demo_chunk(episode_id)]), metadata=AUTH, timeout=20))
    finally:
        channel.close()
    torn = next((data / "episodes" / "arm" / "torn").glob("*.safetensors"))
    cut_short(torn)

    trainer = trainer_for(data)
    try:
        assert trainer.refresh() > 0  # the sound episode's windows
        assert [item.episode.episode_id for item in trainer.index.episodes] == ["sound"]
        entries = Quarantine(data).entries()
        assert [(e["kind"], e["path"]) for e in entries] == [("episodes", str(torn.relative_to(data)))]
        assert "unreadable" in entries[0]["reason"] and not torn.exists()
        assert trainer.refresh() == 0 and Quarantine(data).count() == 1  # skipped for good, counted once
    finally:
        trainer.batches.close()
    json.dumps(entries)  # what the dashboard shows is plain JSON


def test_a_robot_retries_a_version_it_cannot_load_later_and_later(learner_thread, tmp_path, caplog):
    """A version whose weights hold a NaN behind a matching hash is announced (its files check
    out) but no robot loads it; the robot retries it after 1, 2, 4 ... s, not several times a second."""
    learner = learner_thread(train=False)
    registry = VersionRegistry(learner.config.data_dir)
    policy = VLAPolicy(PolicyConfig(vocab=("reach",), **SMALL))
    directory = save_checkpoint(registry.checkpoint_dir(0), policy, 0)
    weights = load_file(str(directory / WEIGHTS_FILE))
    weights["head.out.1.weight"][0, 0] = float("nan")
    save_file(weights, str(directory / WEIGHTS_FILE), metadata={"format": "fleetlearn-checkpoint/1"})
    meta = json.loads((directory / META_FILE).read_text())
    meta["files"][WEIGHTS_FILE] = sha256_file(directory / WEIGHTS_FILE)
    (directory / META_FILE).write_text(json.dumps(meta))
    registry.add(0, {})
    registry.publish(0, note="poisoned behind a matching hash")

    embodiment = wire.embodiment_to_proto("arm", {"front": (32, 32, 3)}, 7, 4, 10)
    uplink = Uplink(UplinkConfig(address=learner.address, token=TOKEN, robot_id="arm", spool_dir=tmp_path / "spool",
                                 weights_dir=tmp_path / "weights"), embodiment, {"reach": "reach the ball"},
                    status=lambda: pb.Heartbeat(robot_id="arm"))
    with caplog.at_level(logging.ERROR, logger="fleetlearn.uplink"):
        uplink.start()
        try:
            time.sleep(8.0)
            refusals = [r.getMessage() for r in caplog.records if "refused policy version 0" in r.getMessage()]
            assert 2 <= len(refusals) <= 5, refusals  # at ~0, 1, 3, 7 s (+-50%)
            assert "non-finite" in refusals[0] and uplink.standby.peek_version() is None
            # A sound version published while version 0 waits for its next try is taken at once.
            save_checkpoint(registry.checkpoint_dir(1), policy, 1)
            registry.add(1, {})
            registry.publish(1, note="sound")
            wait_for(lambda: uplink.standby.peek_version() == 1, 5, "version 1 staged")
        finally:
            uplink.stop()

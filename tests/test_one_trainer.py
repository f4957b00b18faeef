"""One trainer per store, and restarts over damage (issue 24, fault suite): the learner's
trainer dies with the learner, kill -9 included; a store admits one trainer at a time; versions
stay contiguous and every one's files match its hashes across such a kill; a restart over files
cut short starts, quarantines them and resumes from what is sound."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from conftest import TOKEN, wait_for
from core import wire
from fleet.v1 import fleet_pb2 as pb
from fleet.v1 import fleet_pb2_grpc as pb_grpc
from learner.leases import LeaseHeld, StoreLock
from learner.quarantine import Quarantine
from learner.store import StoreReader
from learner.versions import VersionRegistry
from policy.checkpoint import META_FILE, WEIGHTS_FILE, verify_checkpoint
from test_corrupt_files import demo_chunk
from test_faults import trainers

AUTH = (("authorization", f"Bearer {TOKEN}"),)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_store_admits_one_trainer_and_a_killed_holder_lets_go(tmp_path):
    first = StoreLock(tmp_path)
    with pytest.raises(LeaseHeld, match=f"process {os.getpid()}"):
        StoreLock(tmp_path)
    first.release()
    StoreLock(tmp_path).release()
    # A holder killed with -9 holds nothing: the kernel drops its lock with the process.
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from learner.leases import StoreLock; "
                               f"StoreLock({str(tmp_path)!r}); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LeaseHeld):
        StoreLock(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    StoreLock(tmp_path, wait_s=5).release()


def training_chunk(episode_id: str, steps: int = 6) -> pb.EpisodeChunk:
    """A fleet episode in which a human took over: what HG-DAgger learns from, so the trainer publishes."""
    chunk = demo_chunk(episode_id, steps)
    chunk.kind, chunk.policy_version, chunk.outcome.success = pb.EPISODE_KIND_TRAINING, 0, False
    for step in chunk.steps:
        step.source = pb.ACTION_SOURCE_INTERVENTION
    return chunk


def trained_to_version_zero(learner_process):
    """A `fleet learner` whose trainer publishes often, registered robot "arm" with two
    demonstrations, once version 0 is out: (learner, data directory, channel, stub)."""
    args = ["--min-demos", "2", "--bootstrap-updates", "20", "--batch-size", "8", "--base", "none",
            "--publish-every-updates", "5", "--publish-every-s", "1", "--ema-decay", "0.9"]
    learner = learner_process(args).start()
    channel = grpc.insecure_channel(learner.address)
    stub = pb_grpc.FleetLearnerStub(channel)
    embodiment = wire.embodiment_to_proto("arm", {"front": (32, 32, 3)}, 7, 4, 10)
    stub.Register(pb.RegisterRequest(robot_id="arm", embodiment=embodiment), metadata=AUTH, timeout=10)
    list(stub.StreamEpisodes(iter([demo_chunk("demo-a"), demo_chunk("demo-b")]), metadata=AUTH, timeout=20))
    wait_for(lambda: b"published version 0" in learner.log_path.read_bytes(), 180, "version 0")
    return learner, Path(learner.args[learner.args.index("--data") + 1]), channel, stub


def test_a_learner_killed_while_training_leaves_one_trainer_and_sound_contiguous_versions(learner_process):
    learner, data, channel, stub = trained_to_version_zero(learner_process)
    try:
        # New fleet data keep the trainer publishing; the learner is killed at a moment chosen at random.
        acked = []
        for n in range(3):
            acked += [(a.episode_id, a.sequence) for a in
                      stub.StreamEpisodes(iter([training_chunk(f"fleet-{n}")]), metadata=AUTH, timeout=20)]
            time.sleep(random.uniform(0.2, 1.5))
    finally:
        channel.close()
    [trainer] = trainers(learner.proc.pid)
    print(f"\nfault injection: kill -9 of the learner (pid {learner.proc.pid}); its trainer is {trainer}")
    learner.proc.send_signal(signal.SIGKILL)
    learner.proc.wait()
    wait_for(lambda: not alive(trainer), 10, "the orphaned trainer to die with its learner")

    learner.start()  # again, on the same data
    wait_for(lambda: trainers(learner.proc.pid), 30, "the new learner's trainer")
    time.sleep(3.0)
    assert len(trainers(learner.proc.pid)) == 1 and not alive(trainer)
    registry = VersionRegistry(data)
    versions = registry.all()
    assert versions == list(range(len(versions))) and versions, versions  # contiguous, none written twice
    for version in versions:
        assert verify_checkpoint(registry.checkpoint_dir(version))["version"] == version
    announced = np.array([p["version"] for p in registry.publications()])
    assert set(announced) <= set(versions)
    reader = StoreReader(data)  # every acked step still there, once
    try:
        stored = reader.db.execute("SELECT episode_id, sequence, num_steps FROM chunks WHERE episode_id LIKE "
                                   "'fleet-%'").fetchall()
    finally:
        reader.close()
    assert sorted((r["episode_id"], r["sequence"]) for r in stored) == sorted(acked) and len(acked) == 3
    assert sum(r["num_steps"] for r in stored) == 3 * len(training_chunk("x").steps)


def test_a_learner_restarted_over_cut_short_files_starts_and_its_trainer_resumes(learner_process):
    """Fault suite: kill -9 of the learner, then a file of each kind the learner reads at start
    or while training is cut short at a random offset: the newest version's metadata or weights,
    and a stored chunk. The learner starts, the registry goes back to the last sound version, the
    trainer resumes from it, and each bad file is quarantined once."""
    learner, data, channel, stub = trained_to_version_zero(learner_process)
    registry = VersionRegistry(data)
    try:
        list(stub.StreamEpisodes(iter([training_chunk(f"fleet-{n}") for n in range(3)]), metadata=AUTH, timeout=20))
        wait_for(lambda: (registry.latest() or 0) >= 1, 120, "a fleet version")
    finally:
        channel.close()
    learner.proc.send_signal(signal.SIGKILL)
    learner.proc.wait()

    rng = random.Random()
    newest = registry.latest()
    damaged = registry.checkpoint_dir(newest) / rng.choice([META_FILE, WEIGHTS_FILE])
    torn = rng.choice(sorted((data / "episodes").rglob("*.safetensors")))
    for path in (damaged, torn):
        size = path.stat().st_size
        path.write_bytes(path.read_bytes()[:rng.randrange(size)])
    print(f"\nfault injection: kill -9 of the learner, then {damaged.relative_to(data)} and "
          f"{torn.relative_to(data)} cut short")

    learner.start()  # up, on the same data
    wait_for(lambda: b"resumed from version" in learner.log_path.read_bytes()[learner._log_offset:], 60,
             "the trainer to resume")
    log = learner.log_path.read_bytes()[learner._log_offset:].decode()
    assert f"resumed from version {newest - 1}" in log, log[-2000:]
    current = registry.current()
    assert current.version == newest - 1 and current.rollback
    wait_for(lambda: Quarantine(data).count() == 2, 60, "both files quarantined")
    assert sorted(e["kind"] for e in Quarantine(data).entries()) == ["checkpoints", "episodes"]
    assert learner.proc.poll() is None and len(trainers(learner.proc.pid)) == 1

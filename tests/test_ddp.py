"""Data-parallel training under torchrun: two CPU ranks (gloo) follow the Redis episode stream.

bench/gpu_check.sh runs the same test on GPUs: FLEET_DDP_DEVICE=cuda and FLEET_DDP_RANKS=K (one
rank per GPU, NCCL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import wait_for
from fleet.v1 import fleet_pb2 as pb
from learner.store import EpisodeStore

pytest.importorskip("redis")

from learner.store.redis import RedisIndex  # noqa: E402
from learner.versions import RedisVersionRegistry  # noqa: E402

STEPS = 24
DEVICE = os.environ.get("FLEET_DDP_DEVICE", "cpu")
RANKS = int(os.environ.get("FLEET_DDP_RANKS", "2"))


def put_episode(store: EpisodeStore, robot: str, episode: str, kind, rng: np.random.Generator) -> None:
    """One episode in one chunk: a 32-pixel camera, and actions a smooth function of the state."""
    state = rng.uniform(-1, 1, (STEPS, 3)).astype(np.float32)
    source = pb.ACTION_SOURCE_OFFLINE_DEMO if kind == pb.EPISODE_KIND_DEMONSTRATION else pb.ACTION_SOURCE_INTERVENTION
    arrays = {"image/front": rng.integers(0, 255, (STEPS, 32, 32, 3), dtype=np.uint8), "state": state,
              "action": np.tanh(state[:, :2] * 2).astype(np.float32),
              "source": np.full(STEPS, source, np.int8), "step_index": np.arange(STEPS, dtype=np.int64)}
    chunk = pb.EpisodeChunk(robot_id=robot, episode_id=episode, sequence=0, task="reach", instruction="reach the goal",
                            kind=kind, episode_end=True, outcome=pb.EpisodeOutcome(num_steps=STEPS, success=True))
    assert store.put_chunk_sync(chunk, arrays) == "stored"


def rank_status(data) -> list[dict]:
    return [json.loads((data / "trainer" / f"rank-{r}.json").read_text()) for r in range(RANKS)]


def all_fleet_episodes_trained(data, episodes: int) -> bool:
    try:
        ranks = rank_status(data)
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return (len({r["version"] for r in ranks}) == 1 and ranks[0]["version"] >= 1
            and sum(r["episodes"]["fleet"] for r in ranks) == episodes)


def test_ranks_split_the_stream_keep_identical_weights_and_rank_0_alone_publishes(tmp_path, redis_url):
    data = tmp_path / "store"
    store = EpisodeStore(data, index=RedisIndex(redis_url))
    rng = np.random.default_rng(0)
    for i in range(4):
        put_episode(store, "teacher", f"demo-{i}", pb.EPISODE_KIND_DEMONSTRATION, rng)
    log_dir = tmp_path / "logs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    trainer = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(RANKS), "--log-dir", str(log_dir),
         "--redirects", "3", "-m", "fleetlearn.cli", "train", "--redis", redis_url, "--data", str(data),
         "--min-demos", "4", "--bootstrap-updates", "30", "--publish-every-updates", "20", "--batch-size", "16",
         "--device", DEVICE],
        env=env, stdout=open(tmp_path / "torchrun.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    registry = RedisVersionRegistry(data, redis_url)
    try:
        wait_for(lambda: registry.latest() == 0 or trainer.poll() is not None, 240, "version 0")
        assert trainer.poll() is None, (tmp_path / "torchrun.log").read_text()
        # Fleet episodes arrive while the ranks train: each is learned from by one rank.
        for i in range(8):
            put_episode(store, f"arm-{i % 3}", f"run-{i}", pb.EPISODE_KIND_TRAINING, rng)
        # A refresh may catch the episodes part-way through arriving: wait for a version both
        # ranks wrote after every one of them was loaded.
        wait_for(lambda: all_fleet_episodes_trained(data, 8) or trainer.poll() is not None, 240, "a version on all 8")
        assert trainer.poll() is None, (tmp_path / "torchrun.log").read_text()
    finally:
        os.killpg(trainer.pid, signal.SIGTERM)
        trainer.wait(60)
    store.close()

    ranks = rank_status(data)
    last = ranks[0]["version"]
    assert last >= 1 and [(r["rank"], r["world"], r["version"]) for r in ranks] == [(k, RANKS, last) for k in range(RANKS)]
    assert len({r["weights_sha256"] for r in ranks}) == 1
    assert len({r["updates"] for r in ranks}) == 1 and ranks[0]["updates"] >= 50
    # Demonstrations are every rank's; the eight fleet episodes are split between the ranks.
    assert [r["episodes"]["demonstration"] for r in ranks] == [4] * RANKS
    fleet = [r["episodes"]["fleet"] for r in ranks]
    assert sum(fleet) == 8 and (RANKS == 1 or sum(n > 0 for n in fleet) >= 2), fleet
    # Rank 0 alone published: one publication per version, and the ranks agreed at publication.
    assert [p["version"] for p in registry.publications()] == list(range(last + 1))
    assert registry.info(1)["ranks"] == RANKS and registry.info(1)["ranks_agree"] is True
    assert registry.info(1)["device"].startswith(DEVICE)
    logs = {r: "".join(p.read_text() for p in log_dir.rglob(f"{r}/std*.log")) for r in range(RANKS)}
    assert "published version 1" in logs[0] and not any("published version" in logs[r] for r in range(1, RANKS))
    # And training moved the weights between versions.
    v0, v1 = (load_file(str(registry.checkpoint_dir(v) / "policy.safetensors")) for v in (0, 1))
    assert any(not np.array_equal(v0[k], v1[k]) for k in v0)

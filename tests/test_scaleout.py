"""Scale-out through Redis: a real redis-server on a free port, ingest replicas as `fleet ingest`
processes, robots failing over between them, and the trainer's consumer group."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import LearnerProcess, free_port, wait_for
from fleet.v1 import fleet_pb2 as pb
from learner.store import EpisodeStore

redis = pytest.importorskip("redis")

from learner.store.redis import EPISODE_STREAM, RedisIndex, RedisStoreReader, stored_totals  # noqa: E402
from learner.versions import RedisVersionRegistry  # noqa: E402

INTERVENTION, POLICY = pb.ACTION_SOURCE_INTERVENTION, pb.ACTION_SOURCE_AUTONOMOUS


def chunk(robot: str, episode: str, sequence: int, first_step: int, sources: list[int], end: bool = False,
          kind=pb.EPISODE_KIND_TRAINING) -> tuple[pb.EpisodeChunk, dict]:
    n = len(sources)
    message = pb.EpisodeChunk(robot_id=robot, episode_id=episode, sequence=sequence, task="push_cube",
                              instruction="push the red cube", kind=kind, episode_end=end)
    if end:
        message.outcome.CopyFrom(pb.EpisodeOutcome(num_steps=first_step + n, success=True, total_reward=1.0))
    arrays = {"step_index": np.arange(first_step, first_step + n, dtype=np.int64),
              "source": np.asarray(sources, np.int32), "state": np.random.rand(n, 4).astype(np.float32),
              "action": np.random.rand(n, 3).astype(np.float32)}
    return message, arrays


def test_the_redis_script_and_sqlite_follow_the_one_completion_rule(tmp_path, redis_url):
    """The same random episodes (chunks arriving in random order, runs of intervention across
    chunk borders) into the Redis index and the SQLite index: each completes exactly when the
    Python rule (learner/store/base.py) says, with the rule's human steps and takeovers."""
    from learner.store import StoreReader, chunk_summary, episode_totals

    rng = np.random.default_rng(7)
    redis_store = EpisodeStore(tmp_path / "redis", index=RedisIndex(redis_url))
    sqlite_store = EpisodeStore(tmp_path / "sqlite")
    redis_reader = RedisStoreReader(tmp_path / "redis", redis_url, group="rule", consumer="c")
    sqlite_reader = StoreReader(tmp_path / "sqlite")
    expected = {}
    for e in range(12):
        n_chunks = int(rng.integers(1, 5))
        sources = [[int(v) for v in rng.choice([POLICY, INTERVENTION], size=int(rng.integers(1, 5)), p=[0.6, 0.4])]
                   for _ in range(n_chunks)]
        starts = np.cumsum([0] + [len(c) for c in sources])
        chunks = [chunk("r1", f"e{e}", i, int(starts[i]), c, end=i == n_chunks - 1) for i, c in enumerate(sources)]
        summaries = [chunk_summary(arrays) for _, arrays in chunks]
        order = rng.permutation(n_chunks)
        for k, i in enumerate(order):
            for store in (redis_store, sqlite_store):
                store.put_chunk_sync(*chunks[i])
            if k < n_chunks - 1:  # a chunk is still missing: complete for neither index
                assert redis_reader.client.hget(f"fleet:episode:r1:e{e}", "complete") == b"0"
                assert not any(row["episode_id"] == f"e{e}" for row in sqlite_reader.complete_episodes())
        assert episode_totals(summaries[:-1], n_chunks - 1) is None
        expected[f"e{e}"] = episode_totals(summaries, n_chunks - 1)
    for name, rows in (("redis", redis_reader.complete_episodes()), ("sqlite", sqlite_reader.complete_episodes())):
        got = {row["episode_id"]: {"human_steps": row["human_steps"], "takeovers": row["takeovers"]} for row in rows}
        assert got == expected, name
    for closable in (redis_store, sqlite_store, redis_reader, sqlite_reader):
        closable.close()


def test_two_writers_store_each_chunk_once_and_complete_the_episode_once(tmp_path, redis_url):
    """A robot that failed over mid-episode: its chunks land on two replicas, one of them twice."""
    a, b = (EpisodeStore(tmp_path / "store", index=RedisIndex(redis_url)) for _ in range(2))
    c0 = chunk("r1", "e1", 0, 0, [POLICY, POLICY, INTERVENTION])
    c1 = chunk("r1", "e1", 1, 3, [INTERVENTION, POLICY, POLICY])
    c2 = chunk("r1", "e1", 2, 6, [POLICY, INTERVENTION], end=True)
    assert a.put_chunk_sync(*c0) == "stored"
    assert a.put_chunk_sync(*c1) == "stored"      # stored at A, ack lost: the robot sends it again to B
    assert b.put_chunk_sync(*c1) == "duplicate"
    reader = RedisStoreReader(tmp_path / "store", redis_url, group="g", consumer="c")
    assert reader.complete_episodes() == []       # not complete before the last chunk
    assert b.put_chunk_sync(*c2) == "stored"
    assert a.put_chunk_sync(*c2) == "duplicate"
    rows = reader.complete_episodes()
    assert len(rows) == 1 and rows[0]["episode_id"] == "e1"
    # Human steps and takeovers over the whole episode: [P P I][I P P][P I] is 3 human steps in 2 takeovers.
    assert (rows[0]["human_steps"], rows[0]["takeovers"], rows[0]["num_steps"]) == (3, 2, 8)
    episode = reader.load_episode(rows[0])
    assert episode.arrays["step_index"].tolist() == list(range(8))
    assert stored_totals(reader.client) == {"chunks": 3, "steps": 8}
    assert reader.client.xlen(EPISODE_STREAM) == 1

    # Acknowledged on the next read; a restarted trainer (same group) replays what it was given.
    assert reader.complete_episodes() == []
    assert reader.client.xpending(EPISODE_STREAM, "g")["pending"] == 0
    again = RedisStoreReader(tmp_path / "store", redis_url, group="g", consumer="c")
    assert [r["episode_id"] for r in again.complete_episodes()] == ["e1"]
    # An entry taken but never acknowledged (a crash) is acknowledged by the next life, after its replay.
    assert b.put_chunk_sync(*chunk("r1", "e2", 0, 0, [POLICY], end=True)) == "stored"
    assert [r["episode_id"] for r in again.complete_episodes()] == ["e2"]
    assert again.client.xpending(EPISODE_STREAM, "g")["pending"] == 1
    third = RedisStoreReader(tmp_path / "store", redis_url, group="g", consumer="c")
    assert sorted(r["episode_id"] for r in third.complete_episodes()) == ["e1", "e2"]
    third.complete_episodes()
    assert third.client.xpending(EPISODE_STREAM, "g")["pending"] == 0
    for closable in (a, b, reader, again, third):
        closable.close()


def test_versions_in_redis_are_shared(tmp_path, redis_url):
    one, two = RedisVersionRegistry(tmp_path, redis_url), RedisVersionRegistry(tmp_path, redis_url)
    assert one.current() is None
    one.add(0, {"a": 1})
    one.add(1, {"a": 2})
    one.publish(1, note="first")
    two.publish(0, note="rollback", rollback=True)
    current = one.current()
    assert (current.version, current.rollback, current.note) == (0, True, "rollback")
    assert current.directory == tmp_path / "checkpoints" / "v000000"
    assert one.all() == [0, 1] and two.latest() == 1
    with pytest.raises(KeyError):
        two.publish(7)


def ingest_process(data_dir: Path, token_file: Path, log_path: Path, redis_url: str, name: str,
                   dashboard: bool = False, operator_tokens: Path | None = None) -> LearnerProcess:
    """`fleet ingest` (one replica) as a subprocess, so the test can kill -9 it."""
    extra = ["--redis", redis_url, "--replica-id", name]
    if operator_tokens is not None:
        extra += ["--operator-token-file", str(operator_tokens)]
    return LearnerProcess(data_dir, token_file, log_path, port=free_port(), command="ingest", extra=extra,
                          dashboard_port=free_port() if dashboard else -1)


def post(url: str, token: str) -> dict:
    request = urllib.request.Request(url, method="POST", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        exc.msg = f"{exc.msg}: {exc.read().decode()}"
        raise


def publish_small_policy_in_redis(data_dir: Path, redis_url: str, version: int) -> None:
    from test_fleet_e2e import publish_small_policy

    publish_small_policy(data_dir, version, registry=RedisVersionRegistry(data_dir, redis_url))


@pytest.mark.faults  # kill -9 of an ingest replica
def test_replicas_relay_commands_and_robots_fail_over_without_losing_a_step(tmp_path, token_file, redis_url):
    from test_fleet_e2e import RobotThread

    data = tmp_path / "store"
    operators = tmp_path / "operators.txt"
    operators.write_text("alice alice-token-0123\n")
    a = ingest_process(data, token_file, tmp_path / "a.log", redis_url, "replica-a", dashboard=True,
                       operator_tokens=operators).start()
    b = ingest_process(data, token_file, tmp_path / "b.log", redis_url, "replica-b").start()
    publish_small_policy_in_redis(data, redis_url, 0)
    index = RedisStoreReader(data, redis_url)
    # arm-1 starts on A, arm-2 on B; each lists the other replica to fail over to.
    robots = [RobotThread(tmp_path / "robots", f"{a.address},{b.address}", "arm-1", max_steps=60, help_gate="off",
                          realtime=True),
              RobotThread(tmp_path / "robots", f"{b.address},{a.address}", "arm-2", max_steps=40, help_gate="off")]
    try:
        for robot in robots:
            robot.start()
        wait_for(lambda: index.client.get("fleet:at:arm-2") == b"replica-b", 60, "arm-2's control stream at B")
        wait_for(lambda: index.client.get("fleet:at:arm-1") == b"replica-a", 60, "arm-1's control stream at A")
        # A version published once in Redis is announced by both replicas, so both robots run it.
        publish_small_policy_in_redis(data, redis_url, 1)
        wait_for(lambda: all(r.client.version == 1 for r in robots), 60, "both robots to run version 1")

        # A person on A's dashboard takes over arm-2, whose control stream is at B (the takeover
        # lasts until the person hands back or the episode ends).
        base = f"http://127.0.0.1:{a.dashboard_port}/api/robots/arm-2"
        taken = post(f"{base}/take_over", "alice-token-0123")
        assert [c["robot_id"] for c in taken["commands"]] == ["arm-2"]
        wait_for(lambda: any(r["human_steps"] > 0 for r in index.episodes("arm-2") if r.get("complete")), 60,
                 "an arm-2 episode with the takeover relayed through A")
        assert "relayed take_over for arm-2" in b.log_path.read_text()
        # A command for a robot connected nowhere is refused with 404, through the relay too.
        with pytest.raises(urllib.error.HTTPError) as refused:
            post(f"http://127.0.0.1:{a.dashboard_port}/api/robots/arm-9/pause", "alice-token-0123")
        assert refused.value.code == 404

        # kill -9 replica A while arm-1 (in real time, 10 Hz) is mid-episode on it: arm-1 fails over to B.
        def half_stored_at_a():
            for row in index.episodes("arm-1"):
                if not row.get("complete") and any(c["replica"] == "replica-a" for c in index.chunks(row)):
                    return row
        split = wait_for(half_stored_at_a, 60, "an arm-1 episode partly stored via A")
        a.kill()
        wait_for(lambda: robots[0].client.uplink.failovers >= 1, 30, "arm-1 to fail over")
        assert robots[0].client.uplink.learner == b.address
        wait_for(lambda: index.episodes("arm-1") and [r for r in index.episodes("arm-1")
                 if r["episode_id"] == split["episode_id"] and r.get("complete")], 60,
                 "the split episode to complete via B")
        replicas = [c["replica"] for c in index.chunks(split)]
        assert replicas[0] == "replica-a" and replicas[-1] == "replica-b", replicas
    finally:
        for robot in robots:
            if robot.client is not None:
                robot.stop()
        a.stop()
        b.stop()  # idempotent: the checks below read the store and Redis, not B

    # Every episode each robot ran is stored complete, every step exactly once.
    for robot in robots:
        ran = json.loads((robot.config.work_dir / "stats.json").read_text())["episodes"]
        rows = [r for r in index.episodes(robot.config.robot_id)]
        assert all(r["complete"] for r in rows), [r for r in rows if not r["complete"]]
        assert len(rows) == ran
        for row in rows:
            steps = index.load_episode(row).arrays["step_index"].tolist()
            assert steps == list(range(row["num_steps"])), (row["episode_id"], steps)
        assert not list((robot.config.work_dir / "spool").glob("*.chunk")), "chunks left unsent"
    index.close()


def test_one_trainer_per_store(redis_url):
    from learner.leases import TrainerLease

    first = TrainerLease(redis_url)
    with pytest.raises(RuntimeError, match="another trainer"):
        TrainerLease(redis_url)
    first.release()
    TrainerLease(redis_url).release()


def test_the_redis_script_and_sqlite_close_stale_episodes_alike(tmp_path, redis_url):
    """Episodes left open (no end, a gap, no chunk 0) closed as truncated by both indexes: the
    same steps kept, the same totals, the same chunks read back; closed once, and a late end
    chunk does not reopen one."""
    from learner.store import StoreReader

    redis_store = EpisodeStore(tmp_path / "redis", index=RedisIndex(redis_url))
    sqlite_store = EpisodeStore(tmp_path / "sqlite")
    redis_reader = RedisStoreReader(tmp_path / "redis", redis_url, group="stale", consumer="c")
    sqlite_reader = StoreReader(tmp_path / "sqlite")
    chunks = [chunk("r1", "endless", 0, 0, [POLICY, INTERVENTION]), chunk("r1", "endless", 1, 2, [INTERVENTION, POLICY]),
              chunk("r1", "gap", 0, 0, [POLICY] * 3), chunk("r1", "gap", 2, 5, [INTERVENTION] * 2),
              chunk("r1", "headless", 1, 3, [POLICY] * 2), chunk("r1", "ended", 0, 0, [POLICY] * 4, end=True)]
    try:
        for store in (redis_store, sqlite_store):
            for c in chunks:
                store.put_chunk_sync(*c)
        answers = {}
        for name, store, reader in (("redis", redis_store, redis_reader), ("sqlite", sqlite_store, sqlite_reader)):
            assert {row["episode_id"] for row in reader.complete_episodes()} == {"ended"}
            assert store.close_stale(time.time() - 3600) == []  # not open long enough
            assert sorted(store.close_stale(time.time() + 1)) == [("r1", "endless"), ("r1", "gap"), ("r1", "headless")]
            assert store.close_stale(time.time() + 1) == []
            store.put_chunk_sync(*chunk("r1", "gap", 1, 3, [POLICY] * 2, end=True))  # past the closure
            rows = {row["episode_id"]: row for row in reader.complete_episodes()}
            answers[name] = {
                e: (row["num_steps"], row["success"], row["termination"], row["human_steps"], row["takeovers"],
                    reader.load_episode(row).arrays["step_index"].tolist())
                for e, row in rows.items() if e != "ended"}
            answers[name]["headless"] = store.episode_spans("r1", "headless").final
            assert store.episode_spans("r1", "gap").final == 0
        assert answers["redis"] == answers["sqlite"] == {
            "endless": (4, 0, "truncated_by_learner", 2, 1, [0, 1, 2, 3]),
            "gap": (3, 0, "truncated_by_learner", 0, 0, [0, 1, 2]), "headless": -1}
    finally:
        for closable in (redis_store, sqlite_store, redis_reader, sqlite_reader):
            closable.close()

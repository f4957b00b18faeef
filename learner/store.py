"""EpisodeStore: the embedded default store (SQLite index + episode arrays on local disk).

Durability contract ("acknowledged" means this):
- each chunk's arrays are written to a temporary file, fsynced, renamed into place, and the
  directory is fsynced;
- then its index row is committed in SQLite with journal_mode=WAL and synchronous=FULL, which
  fsyncs the WAL on every commit;
- only then is the chunk acknowledged to the robot.
A crash between the rename and the commit leaves an orphan file that the robot's re-send
overwrites; a crash after the commit loses nothing. Re-sent chunks are recognised by the primary
key (robot_id, episode_id, sequence) and never stored twice.

Writes from all gRPC streams go through one writer thread that commits them in groups, so N
concurrent robots cost one WAL fsync per group rather than one per chunk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from fleet.v1 import fleet_pb2 as pb
from core.durable import fsync_dir, fsync_file, private_tmp, safe_name
from core.episode import EpisodeArrays
from core.wire import PROTO_TO_KIND
from learner.versions import VERSIONS_SCHEMA

log = logging.getLogger("fleetlearn.store")

INTERVENTION = pb.ACTION_SOURCE_INTERVENTION
_GROUP_COMMIT_MAX = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS robots (
    robot_id TEXT PRIMARY KEY,
    embodiment BLOB NOT NULL,          -- serialized fleet.v1.Embodiment
    tasks TEXT NOT NULL,               -- JSON list of {name, instruction}
    registered_at REAL NOT NULL,
    last_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS episodes (
    robot_id TEXT NOT NULL,
    episode_id TEXT NOT NULL,
    task TEXT NOT NULL,
    instruction TEXT NOT NULL,
    kind TEXT NOT NULL,                -- training / evaluation / demonstration
    seed INTEGER NOT NULL,
    policy_version INTEGER NOT NULL,
    first_stored_at REAL NOT NULL,
    final_sequence INTEGER,            -- set when the chunk with episode_end arrives
    complete INTEGER NOT NULL DEFAULT 0,
    completed_at REAL,
    num_steps INTEGER,
    success INTEGER,
    total_reward REAL,
    human_steps INTEGER,
    takeovers INTEGER,
    termination TEXT,
    PRIMARY KEY (robot_id, episode_id)
);
CREATE TABLE IF NOT EXISTS chunks (
    robot_id TEXT NOT NULL,
    episode_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    first_step INTEGER NOT NULL,
    num_steps INTEGER NOT NULL,
    path TEXT NOT NULL,                -- relative to the store root
    num_bytes INTEGER NOT NULL,
    human_steps INTEGER NOT NULL,
    takeover_starts INTEGER NOT NULL,  -- autonomous->intervention switches inside the chunk
    first_source INTEGER NOT NULL,
    last_source INTEGER NOT NULL,
    stored_at REAL NOT NULL,
    PRIMARY KEY (robot_id, episode_id, sequence)
);
CREATE INDEX IF NOT EXISTS episodes_by_version ON episodes(policy_version, kind);
CREATE INDEX IF NOT EXISTS episodes_by_robot ON episodes(robot_id, completed_at);
"""


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
    else:
        db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
    db.row_factory = sqlite3.Row
    return db


def chunk_summary(arrays: dict[str, np.ndarray]) -> dict[str, int]:
    """What an episode's totals need of one chunk: its human steps and where takeovers start."""
    source = arrays["source"]
    human = source == INTERVENTION
    return {"human_steps": int(human.sum()), "takeover_starts": int(np.sum(human[1:] & ~human[:-1])),
            "first_source": int(source[0]), "last_source": int(source[-1])}


class SqliteIndex:
    """The embedded episode index: one SQLite file next to the episode arrays (one writer process)."""

    def __init__(self, root: Path):
        self.db = connect(root / "index.sqlite")
        self.db.executescript(_SCHEMA)
        self.db.executescript(VERSIONS_SCHEMA)
        self.db.commit()
        self._lock = threading.Lock()  # serialises use of the connection between threads

    def register_robot(self, robot_id: str, embodiment: pb.Embodiment, tasks: list[dict]) -> None:
        now = time.time()
        with self._lock:
            self.db.execute(
                "INSERT INTO robots VALUES (?, ?, ?, ?, ?) ON CONFLICT(robot_id) DO UPDATE SET "
                "embodiment=excluded.embodiment, tasks=excluded.tasks, last_seen=excluded.last_seen",
                (robot_id, embodiment.SerializeToString(), json.dumps(tasks), now, now),
            )
            self.db.commit()

    def robot_embodiment(self, robot_id: str) -> pb.Embodiment | None:
        with self._lock:
            return robot_embodiment(self.db, robot_id)

    def stored(self, keys: list[tuple[str, str, int]]) -> set[tuple[str, str, int]]:
        with self._lock:
            return {key for key in keys if self.db.execute(
                "SELECT 1 FROM chunks WHERE robot_id=? AND episode_id=? AND sequence=?", key).fetchone()}

    def add(self, fresh: list[tuple[pb.EpisodeChunk, dict[str, np.ndarray], tuple[str, int]]]) -> set:
        """Indexes written chunks in one transaction; the only writer, so none is a duplicate."""
        with self._lock:
            now = time.time()
            episodes_touched = set()
            for chunk, arrays, (rel, size) in fresh:
                c = chunk_summary(arrays)
                self.db.execute(
                    "INSERT INTO episodes (robot_id, episode_id, task, instruction, kind, seed, policy_version, "
                    "first_stored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (chunk.robot_id, chunk.episode_id, chunk.task, chunk.instruction, PROTO_TO_KIND[chunk.kind],
                     chunk.seed, chunk.policy_version, now))
                self.db.execute(
                    "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (chunk.robot_id, chunk.episode_id, chunk.sequence, int(arrays["step_index"][0]),
                     len(arrays["source"]), rel, size, c["human_steps"], c["takeover_starts"], c["first_source"],
                     c["last_source"], now))
                if chunk.episode_end:
                    o = chunk.outcome
                    self.db.execute(
                        "UPDATE episodes SET final_sequence=?, num_steps=?, success=?, total_reward=?, termination=? "
                        "WHERE robot_id=? AND episode_id=?",
                        (chunk.sequence, o.num_steps, int(o.success), o.total_reward, o.termination,
                         chunk.robot_id, chunk.episode_id))
                episodes_touched.add((chunk.robot_id, chunk.episode_id))
            for robot_id, episode_id in episodes_touched:
                self._maybe_complete(robot_id, episode_id, now)
            self.db.commit()
            return set()

    def _maybe_complete(self, robot_id: str, episode_id: str, now: float) -> None:
        row = self.db.execute("SELECT final_sequence, complete FROM episodes WHERE robot_id=? AND episode_id=?",
                              (robot_id, episode_id)).fetchone()
        if row["complete"] or row["final_sequence"] is None:
            return
        chunks = self.db.execute(
            "SELECT human_steps, takeover_starts, first_source, last_source FROM chunks "
            "WHERE robot_id=? AND episode_id=? ORDER BY sequence", (robot_id, episode_id)).fetchall()
        if len(chunks) != row["final_sequence"] + 1:
            return
        takeovers = 0
        previous_last = None
        for c in chunks:
            takeovers += c["takeover_starts"]
            if c["first_source"] == INTERVENTION and previous_last != INTERVENTION:
                takeovers += 1
            previous_last = c["last_source"]
        self.db.execute(
            "UPDATE episodes SET complete=1, completed_at=?, human_steps=?, takeovers=? WHERE robot_id=? AND episode_id=?",
            (now, sum(c["human_steps"] for c in chunks), takeovers, robot_id, episode_id))

    def close(self) -> None:
        with self._lock:
            self.db.close()


class EpisodeStore:
    """Owns the store directory; safe to share between the asyncio server and its writer thread.

    The index is SQLite in the directory by default; with `index` a RedisIndex (scale-out), several
    ingest processes share the directory and the index (learner/redis_plane.py)."""

    def __init__(self, root: Path, index=None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "episodes").mkdir(exist_ok=True)
        (self.root / "checkpoints").mkdir(exist_ok=True)
        self.index = index if index is not None else SqliteIndex(self.root)
        self._queue: queue.Queue = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
        self._writer.start()

    # -- robots --------------------------------------------------------------------------------

    def register_robot(self, robot_id: str, embodiment: pb.Embodiment, tasks: list[dict]) -> None:
        self.index.register_robot(robot_id, embodiment, tasks)

    def robot_embodiment(self, robot_id: str) -> pb.Embodiment | None:
        return self.index.robot_embodiment(robot_id)

    # -- chunk ingest --------------------------------------------------------------------------

    async def put_chunk(self, chunk: pb.EpisodeChunk, arrays: dict[str, np.ndarray]) -> str:
        """Persists a decoded chunk; returns "stored" or "duplicate" once it is durable."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((chunk, arrays, loop, future))
        return await future

    def put_chunk_sync(self, chunk: pb.EpisodeChunk, arrays: dict[str, np.ndarray]) -> str:
        done = threading.Event()
        result: list = []
        self._queue.put((chunk, arrays, None, (done, result)))
        done.wait()
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]

    def _write_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < _GROUP_COMMIT_MAX:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                group.append(item)
            try:
                outcomes: list = self._write_group([(c, a) for c, a, _, _ in group])
            except Exception as exc:  # disk full, I/O error: every waiter learns, nothing is acked
                log.exception("store write failed")
                outcomes = [exc] * len(group)
            for (_, _, loop, waiter), outcome in zip(group, outcomes):
                if loop is None:
                    done, result = waiter
                    result.append(outcome)
                    done.set()
                elif isinstance(outcome, BaseException):
                    loop.call_soon_threadsafe(_set_exception, waiter, outcome)
                else:
                    loop.call_soon_threadsafe(_set_result, waiter, outcome)

    def _write_group(self, group: list[tuple[pb.EpisodeChunk, dict[str, np.ndarray]]]) -> list[str]:
        """Files first (fsynced, renamed, directories fsynced), then the index: a chunk is in the
        index only once its arrays are durable."""
        keys = [(chunk.robot_id, chunk.episode_id, chunk.sequence) for chunk, _ in group]
        duplicates = self.index.stored(keys)
        fresh = []
        for key, (chunk, arrays) in zip(keys, group):
            if key not in duplicates:
                duplicates.add(key)  # the same chunk twice in one group is stored once
                fresh.append((chunk, arrays, self._write_chunk_file(chunk, arrays)))
            else:
                fresh.append(None)
        written = [f for f in fresh if f is not None]
        dirs = {(self.root / rel).parent for _, _, (rel, _) in written}
        for d in dirs | {d.parent for d in dirs}:
            fsync_dir(d)
        raced = self.index.add(written)  # another replica indexed it between our check and now
        return ["stored" if f is not None and key not in raced else "duplicate" for key, f in zip(keys, fresh)]

    def _write_chunk_file(self, chunk: pb.EpisodeChunk, arrays: dict[str, np.ndarray]) -> tuple[str, int]:
        rel = f"episodes/{safe_name(chunk.robot_id)}/{safe_name(chunk.episode_id)}/{chunk.sequence:06d}.safetensors"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = private_tmp(path)
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
        fsync_file(tmp)
        os.replace(tmp, path)
        return rel, path.stat().st_size

    def close(self) -> None:
        self._queue.put(None)
        self._writer.join(timeout=10)
        self.index.close()


def _set_result(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def robot_embodiment(db: sqlite3.Connection, robot_id: str) -> pb.Embodiment | None:
    """A registered robot's embodiment, or None for a robot the store has never seen."""
    row = db.execute("SELECT embodiment FROM robots WHERE robot_id=?", (robot_id,)).fetchone()
    return pb.Embodiment.FromString(row["embodiment"]) if row else None


class StoreReader:
    """Read-only view used by the trainer process, the demo monitor and the CLI."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.db = connect(self.root / "index.sqlite", readonly=True)

    def complete_episodes(self, after_completed_at: float = 0.0) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT * FROM episodes WHERE complete=1 AND completed_at>? ORDER BY completed_at",
            (after_completed_at,)).fetchall()

    def load_episode(self, row: sqlite3.Row) -> EpisodeArrays:
        chunks = self.db.execute("SELECT path FROM chunks WHERE robot_id=? AND episode_id=? ORDER BY sequence",
                                 (row["robot_id"], row["episode_id"])).fetchall()
        parts = [load_file(str(self.root / c["path"])) for c in chunks]
        arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return EpisodeArrays(row["robot_id"], row["episode_id"], row["task"], row["instruction"], row["kind"],
                             row["policy_version"], bool(row["success"]), arrays)

    def robot_embodiment(self, robot_id: str) -> pb.Embodiment | None:
        return robot_embodiment(self.db, robot_id)

    def demonstration_counts(self) -> dict[str, int]:
        """task -> complete demonstrations."""
        rows = self.db.execute(
            "SELECT task, COUNT(*) AS n FROM episodes WHERE complete=1 AND kind='demonstration' GROUP BY task")
        return {r["task"]: r["n"] for r in rows}

    def close(self) -> None:
        self.db.close()

"""The embedded episode index: one SQLite file next to the episode arrays (one writer process),
journal_mode=WAL and synchronous=FULL, so every commit fsyncs the WAL. Also the store's reader
for the trainer, the dashboard, the metrics and the benchmarks: the SQL lives here alone."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

from core.episode import EpisodeArrays
from core.wire import PROTO_TO_KIND
from fleet.v1 import fleet_pb2 as pb
from learner.store.base import (TRUNCATED, StoredEpisode, chunk_summary, episode_totals, load_episode_arrays,
                                truncated_final)
from learner.versions import VERSIONS_SCHEMA

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


class SqliteIndex:
    """The embedded episode index: one SQLite file next to the episode arrays (one writer process)."""

    def __init__(self, root: Path):
        self.db = connect(root / "index.sqlite")
        self.db.executescript(_SCHEMA)
        self.db.executescript(VERSIONS_SCHEMA)
        self.db.commit()
        self._lock = threading.Lock()  # serialises use of the connection between threads
        self.reads, self._read_lock = connect(root / "index.sqlite", readonly=True), threading.Lock()

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
                        "WHERE robot_id=? AND episode_id=? AND final_sequence IS NULL",  # not one closed meanwhile
                        (chunk.sequence, o.num_steps, int(o.success), o.total_reward, o.termination,
                         chunk.robot_id, chunk.episode_id))
                episodes_touched.add((chunk.robot_id, chunk.episode_id))
            for robot_id, episode_id in episodes_touched:
                self._maybe_complete(robot_id, episode_id, now)
            self.db.commit()
            return set()

    def episode_spans(self, robot_id: str, episode_id: str) -> StoredEpisode:
        """Read on a connection of its own: a stream's check never waits on the writer's commit."""
        with self._read_lock:
            row = self.reads.execute("SELECT final_sequence, first_stored_at FROM episodes WHERE robot_id=? AND "
                                     "episode_id=?", (robot_id, episode_id)).fetchone()
            spans = self.reads.execute("SELECT sequence, first_step, num_steps FROM chunks WHERE robot_id=? AND "
                                       "episode_id=?", (robot_id, episode_id)).fetchall()
        return StoredEpisode(row["final_sequence"] if row else None,
                             {c["sequence"]: (c["first_step"], c["num_steps"]) for c in spans},
                             row["first_stored_at"] if row else None)

    def close_stale(self, opened_before: float) -> list[tuple[str, str]]:
        with self._lock:
            now, closed = time.time(), []
            for row in self.db.execute("SELECT robot_id, episode_id FROM episodes WHERE complete=0 AND "
                                       "COALESCE(final_sequence, 0)>=0 AND first_stored_at<?", (opened_before,)).fetchall():
                key = (row["robot_id"], row["episode_id"])
                spans = self.db.execute("SELECT sequence, num_steps FROM chunks WHERE robot_id=? AND episode_id=?",
                                        key).fetchall()
                final = truncated_final(c["sequence"] for c in spans)
                self.db.execute(
                    "UPDATE episodes SET final_sequence=?, num_steps=?, success=0, total_reward=NULL, termination=? "
                    "WHERE robot_id=? AND episode_id=?",
                    (final, sum(c["num_steps"] for c in spans if c["sequence"] <= final), TRUNCATED, *key))
                self._maybe_complete(*key, now)
                closed.append(key)
            self.db.commit()
            return closed

    def _maybe_complete(self, robot_id: str, episode_id: str, now: float) -> None:
        row = self.db.execute("SELECT final_sequence, complete FROM episodes WHERE robot_id=? AND episode_id=?",
                              (robot_id, episode_id)).fetchone()
        if row["complete"] or row["final_sequence"] is None or row["final_sequence"] < 0:  # -1: closed empty
            return
        chunks = self.db.execute(
            "SELECT human_steps, takeover_starts, first_source, last_source FROM chunks "
            "WHERE robot_id=? AND episode_id=? AND sequence<=? ORDER BY sequence",
            (robot_id, episode_id, row["final_sequence"])).fetchall()
        totals = episode_totals(chunks, row["final_sequence"])
        if totals is None:
            return
        self.db.execute(
            "UPDATE episodes SET complete=1, completed_at=?, human_steps=?, takeovers=? WHERE robot_id=? AND episode_id=?",
            (now, totals["human_steps"], totals["takeovers"], robot_id, episode_id))

    def close(self) -> None:
        with self._lock, self._read_lock:
            self.db.close()
            self.reads.close()


def robot_embodiment(db: sqlite3.Connection, robot_id: str) -> pb.Embodiment | None:
    """A registered robot's embodiment, or None for a robot the store has never seen."""
    row = db.execute("SELECT embodiment FROM robots WHERE robot_id=?", (robot_id,)).fetchone()
    return pb.Embodiment.FromString(row["embodiment"]) if row else None


class StoreReader:
    """Read-only view of an SQLite-indexed store: the trainer, the dashboard, the metrics, the
    demo and the benchmarks read through it (none of them writes SQL of its own)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.db = connect(self.root / "index.sqlite", readonly=True)

    def complete_episodes(self, after_completed_at: float = 0.0) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT * FROM episodes WHERE complete=1 AND completed_at>? ORDER BY completed_at",
            (after_completed_at,)).fetchall()

    def load_episode(self, row: sqlite3.Row) -> EpisodeArrays:
        chunks = self.db.execute("SELECT path FROM chunks WHERE robot_id=? AND episode_id=? AND sequence<=? "
                                 "ORDER BY sequence", (row["robot_id"], row["episode_id"], row["final_sequence"])).fetchall()
        arrays = load_episode_arrays(self.root, [c["path"] for c in chunks])
        return EpisodeArrays(row["robot_id"], row["episode_id"], row["task"], row["instruction"], row["kind"],
                             row["policy_version"], bool(row["success"]), arrays)

    def robot_embodiment(self, robot_id: str) -> pb.Embodiment | None:
        return robot_embodiment(self.db, robot_id)

    def demonstration_counts(self) -> dict[str, int]:
        """task -> complete demonstrations."""
        rows = self.db.execute(
            "SELECT task, COUNT(*) AS n FROM episodes WHERE complete=1 AND kind='demonstration' GROUP BY task")
        return {r["task"]: r["n"] for r in rows}

    # -- summaries for the metrics, the dashboard and the benchmarks ---------------------------

    def version_summaries(self) -> list[sqlite3.Row]:
        """Per policy version that ran, over its complete episodes: training and evaluation
        episode counts, their successes, and the training episodes' takeovers, human steps and
        sum of reward / (1 + human steps)."""
        return self.db.execute(
            """SELECT policy_version AS version,
                      SUM(kind='training') AS episodes,
                      SUM(kind='evaluation') AS eval_episodes,
                      SUM(CASE WHEN kind='evaluation' THEN success ELSE 0 END) AS eval_successes,
                      SUM(CASE WHEN kind='training' THEN success ELSE 0 END) AS train_successes,
                      SUM(CASE WHEN kind='training' THEN takeovers ELSE 0 END) AS takeovers,
                      SUM(CASE WHEN kind='training' THEN human_steps ELSE 0 END) AS human_steps,
                      SUM(CASE WHEN kind='training' THEN total_reward / (1.0 + human_steps) ELSE 0 END) AS rohe_sum
               FROM episodes WHERE complete=1 AND policy_version >= 0
               GROUP BY policy_version ORDER BY policy_version""").fetchall()

    def task_summaries(self, kind: str) -> list[sqlite3.Row]:
        """Per (version, task), over complete episodes of `kind`: episodes, successes, takeovers."""
        return self.db.execute(
            """SELECT policy_version AS version, task, COUNT(*) AS episodes, SUM(success) AS successes,
                      SUM(takeovers) AS takeovers
               FROM episodes WHERE complete=1 AND policy_version >= 0 AND kind=?
               GROUP BY policy_version, task ORDER BY task""", (kind,)).fetchall()

    def robots(self) -> dict[str, list[dict]]:
        """robot id -> its tasks ({name, instruction}), for every registered robot."""
        return {r["robot_id"]: json.loads(r["tasks"]) for r in self.db.execute("SELECT robot_id, tasks FROM robots")}

    def any_embodiment(self) -> pb.Embodiment | None:
        row = self.db.execute("SELECT embodiment FROM robots LIMIT 1").fetchone()
        return pb.Embodiment.FromString(row["embodiment"]) if row else None

    def recent_outcomes(self, robot_id: str, limit: int) -> list[sqlite3.Row]:
        """The robot's latest complete training and evaluation episodes, newest first."""
        return self.db.execute(
            "SELECT success, takeovers, human_steps FROM episodes WHERE robot_id=? AND complete=1 "
            "AND kind IN ('training', 'evaluation') ORDER BY completed_at DESC LIMIT ?", (robot_id, limit)).fetchall()

    def episodes(self, robot_id: str | None = None, policy_version: int | None = None) -> list[sqlite3.Row]:
        """Every indexed episode (complete or not), optionally of one robot or one version."""
        clauses = [(name, value) for name, value in (("robot_id", robot_id), ("policy_version", policy_version))
                   if value is not None]
        where = " AND ".join(f"{name}=?" for name, _ in clauses) or "1"
        return self.db.execute(f"SELECT * FROM episodes WHERE {where}", [v for _, v in clauses]).fetchall()

    def stored_totals(self, robot_id: str | None = None) -> dict[str, int]:
        """Chunks and steps stored, and episodes not yet complete (of one robot, or all)."""
        where, args = ("WHERE robot_id=?", (robot_id,)) if robot_id is not None else ("", ())
        chunks, steps = self.db.execute(f"SELECT COUNT(*), COALESCE(SUM(num_steps), 0) FROM chunks {where}",
                                        args).fetchone()
        incomplete = self.db.execute(f"SELECT COUNT(*) FROM episodes {where} {'AND' if where else 'WHERE'} "
                                     "complete=0", args).fetchone()[0]
        return {"chunks": chunks, "steps": steps, "incomplete_episodes": incomplete}

    def human_effort(self, completed_by: float = float("inf")) -> tuple[int, int]:
        """(human steps, complete training episodes) of the episodes completed by that time."""
        human, episodes = self.db.execute(
            "SELECT COALESCE(SUM(human_steps), 0), COUNT(*) FROM episodes WHERE complete=1 AND kind='training' "
            "AND completed_at <= ?", (completed_by,)).fetchone()
        return human, episodes

    def close(self) -> None:
        self.db.close()

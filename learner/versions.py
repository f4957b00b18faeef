"""VersionRegistry: which policy versions exist and which one is published.

Both live in the store's SQLite index, so they survive learner restarts and can be changed by
another process: the trainer adds versions, `fleet rollback` re-publishes an old one, and the
server's WeightPublisher notices either within a poll interval.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

VERSIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS policy_versions (
    version INTEGER PRIMARY KEY,
    path TEXT NOT NULL,                -- checkpoint directory relative to the store root
    created_at REAL NOT NULL,
    info TEXT NOT NULL                 -- JSON: training step, algorithm, losses
);
CREATE TABLE IF NOT EXISTS publications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version INTEGER NOT NULL REFERENCES policy_versions(version),
    published_at REAL NOT NULL,
    rollback INTEGER NOT NULL,
    note TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Publication:
    id: int
    version: int
    directory: Path
    published_at: float
    rollback: bool
    note: str


class VersionRegistry:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.db = sqlite3.connect(self.root / "index.sqlite", timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(VERSIONS_SCHEMA)

    def checkpoint_dir(self, version: int) -> Path:
        return self.root / "checkpoints" / f"v{version:06d}"

    def add(self, version: int, info: dict) -> None:
        rel = self.checkpoint_dir(version).relative_to(self.root)
        self.db.execute("INSERT OR REPLACE INTO policy_versions VALUES (?, ?, ?, ?)",
                        (version, str(rel), time.time(), json.dumps(info)))
        self.db.commit()

    def latest(self) -> int | None:
        return self.db.execute("SELECT MAX(version) FROM policy_versions").fetchone()[0]

    def all(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT version FROM policy_versions ORDER BY version")]

    def publish(self, version: int, note: str = "", rollback: bool = False) -> None:
        if not self.db.execute("SELECT 1 FROM policy_versions WHERE version=?", (version,)).fetchone():
            raise KeyError(f"policy version {version} does not exist; known: {self.all()}")
        self.db.execute("INSERT INTO publications (version, published_at, rollback, note) VALUES (?, ?, ?, ?)",
                        (version, time.time(), int(rollback), note))
        self.db.commit()

    def current(self) -> Publication | None:
        row = self.db.execute(
            "SELECT p.id, p.version, v.path, p.published_at, p.rollback, p.note FROM publications p "
            "JOIN policy_versions v USING (version) ORDER BY p.id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return Publication(row[0], row[1], self.root / row[2], row[3], bool(row[4]), row[5])

    def close(self) -> None:
        self.db.close()


def open_registry(root: Path, redis_url: str | None = None):
    """The version registry of a store: SQLite in the directory, or Redis when scaled out."""
    if redis_url:
        from learner.redis_plane import RedisVersionRegistry

        return RedisVersionRegistry(root, redis_url)
    return VersionRegistry(root)

"""Policy versions: which exist and which one is published, in one of two backends.

`VersionRegistry` keeps both in the store's SQLite index (the embedded default);
`RedisVersionRegistry` keeps them in Redis for scaled-out replicas. Either way they survive
learner restarts and can be changed by another process: the trainer adds versions, `fleet
rollback` re-publishes an old one, and every server's WeightPublisher notices within a poll.
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
    """Versions and publications in the store's SQLite index. `readonly` opens an existing index
    for readers (the dashboard, benchmarks) that must never write to it."""

    def __init__(self, root: Path, readonly: bool = False):
        self.root = Path(root)
        path = self.root / "index.sqlite"
        if readonly:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
        else:
            self.db = sqlite3.connect(path, timeout=30, check_same_thread=False)
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

    def info(self, version: int) -> dict | None:
        row = self.db.execute("SELECT info FROM policy_versions WHERE version=?", (version,)).fetchone()
        return json.loads(row[0]) if row else None

    def versions(self) -> list[dict]:
        """Every version in order: {version, directory, created_at, info}."""
        return [dict(version=v, directory=self.root / path, created_at=created, info=json.loads(info))
                for v, path, created, info in self.db.execute(
                    "SELECT version, path, created_at, info FROM policy_versions ORDER BY version")]

    def publications(self) -> list[dict]:
        """Every publication in order: {id, version, published_at, rollback, note}."""
        return [dict(id=i, version=v, published_at=at, rollback=bool(rb), note=note) for i, v, at, rb, note in
                self.db.execute("SELECT id, version, published_at, rollback, note FROM publications ORDER BY id")]

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


class RedisVersionRegistry:
    """VersionRegistry's interface on Redis: versions, and publications in order."""

    def __init__(self, root: Path, url: str):
        from learner.redis_client import connect  # noqa: PLC0415 (the embedded learner needs no Redis)

        self.root = Path(root)
        self.client = connect(url)

    def checkpoint_dir(self, version: int) -> Path:
        return self.root / "checkpoints" / f"v{version:06d}"

    def add(self, version: int, info: dict) -> None:
        rel = str(self.checkpoint_dir(version).relative_to(self.root))
        self.client.hset("fleet:versions", str(version),
                         json.dumps({"path": rel, "created_at": time.time(), "info": info}))

    def all(self) -> list[int]:
        return sorted(int(v) for v in self.client.hkeys("fleet:versions"))

    def latest(self) -> int | None:
        versions = self.all()
        return versions[-1] if versions else None

    def info(self, version: int) -> dict | None:
        raw = self.client.hget("fleet:versions", str(version))
        return json.loads(raw)["info"] if raw else None

    def versions(self) -> list[dict]:
        entries = {int(k): json.loads(v) for k, v in self.client.hgetall("fleet:versions").items()}
        return [dict(version=v, directory=self.root / e["path"], created_at=e["created_at"], info=e["info"])
                for v, e in sorted(entries.items())]

    def publish(self, version: int, note: str = "", rollback: bool = False) -> None:
        if not self.client.hexists("fleet:versions", str(version)):
            raise KeyError(f"policy version {version} does not exist; known: {self.all()}")
        # The id and the append in one step, so publications from several writers stay in id order.
        self.client.eval("local p = cjson.decode(ARGV[1]); p.id = redis.call('INCR', KEYS[1]); "
                         "return redis.call('RPUSH', KEYS[2], cjson.encode(p))", 2, "fleet:publication_id",
                         "fleet:publications", json.dumps({"version": version, "published_at": time.time(),
                                                          "rollback": rollback, "note": note}))

    def publications(self) -> list[dict]:
        return [json.loads(p) for p in self.client.lrange("fleet:publications", 0, -1)]

    def current(self) -> Publication | None:
        last = self.client.lindex("fleet:publications", -1)
        if last is None:
            return None
        p = json.loads(last)
        entry = json.loads(self.client.hget("fleet:versions", str(p["version"])))
        return Publication(p["id"], p["version"], self.root / entry["path"], p["published_at"], p["rollback"], p["note"])

    def close(self) -> None:
        self.client.close()


def open_registry(root: Path, redis_url: str | None = None):
    """The version registry of a store: SQLite in the directory, or Redis when scaled out."""
    return RedisVersionRegistry(root, redis_url) if redis_url else VersionRegistry(root)

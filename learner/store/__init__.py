"""The episode store: chunk files on disk and an index of robots, episodes and chunks.

- `base`: the interfaces (`EpisodeIndex`, `EpisodeReader`) and the completion rule;
- `writer`: `EpisodeStore`, the ingest side (durable chunk files, group commits to the index);
- `sqlite`: the embedded index and `StoreReader`, the one place the SQL lives;
- `redis`: the scale-out index and `RedisStoreReader` (several ingest replicas, one trainer).

`open_index` and `open_reader` pick the backend from a Redis URL (None: SQLite in the directory).
"""

from __future__ import annotations

from pathlib import Path

from learner.store.base import INTERVENTION, EpisodeIndex, EpisodeReader, chunk_summary, episode_totals
from learner.store.sqlite import SqliteIndex, StoreReader, connect
from learner.store.writer import EpisodeStore

__all__ = ["INTERVENTION", "EpisodeIndex", "EpisodeReader", "EpisodeStore", "SqliteIndex", "StoreReader",
           "chunk_summary", "connect", "episode_totals", "open_index", "open_reader"]


def open_index(root: Path, redis_url: str | None = None, replica_id: str = "") -> EpisodeIndex:
    if redis_url:
        from learner.store.redis import RedisIndex  # noqa: PLC0415 (the embedded learner needs no Redis)

        return RedisIndex(redis_url, replica_id)
    return SqliteIndex(Path(root))


def open_reader(root: Path, redis_url: str | None = None, **stream) -> EpisodeReader:
    """The store's reader; scaled out, `stream` names the trainer's consumer group and consumer."""
    if redis_url:
        from learner.store.redis import RedisStoreReader  # noqa: PLC0415

        return RedisStoreReader(Path(root), redis_url, **stream)
    return StoreReader(Path(root))

"""EpisodeStore: chunk files on disk plus an index (SQLite by default, Redis when scaled out).

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
concurrent robots cost one WAL fsync per group rather than one per chunk. A group takes the
robots' queued chunks in turn (`fair_group`), not first come first served: a robot that floods
the store waits behind the others, not they behind it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import queue
import threading
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from core.durable import fsync_dir, fsync_file, private_tmp, safe_name
from fleet.v1 import fleet_pb2 as pb
from learner.store.base import EpisodeIndex, StoredEpisode
from learner.store.sqlite import SqliteIndex

log = logging.getLogger("fleetlearn.store")

_GROUP_COMMIT_MAX = 64
_GROUP_COMMIT_BYTES = 4 << 20


class EpisodeStore:
    """Owns the store directory; safe to share between the asyncio server and its writer thread.

    The index is SQLite in the directory by default; with `index` a RedisIndex (scale-out), several
    ingest processes share the directory and the index (learner/store/redis.py)."""

    def __init__(self, root: Path, index: EpisodeIndex | None = None):
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

    def episode_spans(self, robot_id: str, episode_id: str) -> StoredEpisode:
        """What the index holds of an episode, for the integrity check (learner/store/base.py)."""
        return self.index.episode_spans(robot_id, episode_id)

    def close_stale(self, opened_before: float) -> list[tuple[str, str]]:
        """Closes the episodes open since before `opened_before` as truncated (EpisodeIndex.close_stale)."""
        closed = self.index.close_stale(opened_before)
        for robot_id, episode_id in closed:
            log.warning("closed episode %s of %s as truncated: open longer than the learner's bound", episode_id,
                        robot_id)
        return closed

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
        waiting: dict[str, collections.deque] = {}  # queued chunks by robot id, each in arrival order
        closing = False
        while waiting or not closing:
            try:  # wait only when nothing is queued; take whatever else has arrived meanwhile
                item = self._queue.get_nowait() if waiting else self._queue.get()
                while item is not None:
                    waiting.setdefault(item[0].robot_id, collections.deque()).append(item)
                    item = self._queue.get_nowait()
                closing = True
            except queue.Empty:
                pass
            if waiting:
                self._write_and_answer(fair_group(waiting))

    def _write_and_answer(self, group: list) -> None:
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


def fair_group(waiting: dict[str, collections.deque]) -> list:
    """The next commit group: one queued chunk per robot in turn (a robot served moves behind the
    others) until the group holds _GROUP_COMMIT_MAX chunks or _GROUP_COMMIT_BYTES, so a robot with
    many chunks queued delays another robot's chunk by at most about one group's write."""
    group, size = [], 0
    while waiting and len(group) < _GROUP_COMMIT_MAX and size < _GROUP_COMMIT_BYTES:
        robot_id = next(iter(waiting))
        queued = waiting.pop(robot_id)
        item = queued.popleft()
        group.append(item)
        size += sum(a.nbytes for a in item[1].values())
        if queued:
            waiting[robot_id] = queued
    return group


def _set_result(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)



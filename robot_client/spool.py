"""On-disk spool: every sealed chunk waits here until the learner acknowledges it.

A chunk is one file: an 8-byte header (magic, CRC-32 of the payload) and the serialized
fleet.v1.EpisodeChunk, written to a temporary name, fsynced and renamed, so a crash leaves
either the whole chunk or nothing; a file damaged later (bit rot, a truncation) fails its CRC
and is quarantined rather than sent. Files without the header (older spools) are read as bare
chunks. The file is deleted
only on ack; a robot restarted with a full spool re-sends everything (the learner de-duplicates).
Chunks the learner refuses as malformed are moved to rejected/ with the reason, never deleted.

The directory is listed once, when the spool opens (a restarted robot picks up what it left);
after that an in-memory index, kept in write order, says what is pending, so the uplink's
frequent "anything to send?" never touches the disk.
"""

from __future__ import annotations

import logging
import os
import queue
import struct
import threading
import time
import zlib
from collections import OrderedDict
from pathlib import Path

from google.protobuf.message import DecodeError

from fleet.v1 import fleet_pb2 as pb


_MAGIC = b"FLC1"
log = logging.getLogger("fleetlearn.robot")  # the writer speaks for the robot, as it always has


class CorruptChunk(ValueError):
    """A spool file that is not a readable chunk: moved to rejected/, never sent."""


class Spool:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "rejected").mkdir(exist_ok=True)
        self.changed = threading.Event()
        for stale in self.dir.glob("*.tmp"):
            stale.unlink()
        self._lock = threading.Lock()
        on_disk = sorted((p.stat().st_mtime_ns, p.name) for p in self.dir.glob("*.chunk"))
        self._pending: OrderedDict[str, None] = OrderedDict((name, None) for _, name in on_disk)

    @staticmethod
    def _name(episode_id: str, sequence: int) -> str:
        return f"{episode_id}__{sequence:06d}.chunk"

    def put(self, chunk: pb.EpisodeChunk) -> None:
        path = self.dir / self._name(chunk.episode_id, chunk.sequence)
        tmp = path.with_suffix(".tmp")
        payload = chunk.SerializeToString()
        try:
            with open(tmp, "wb") as f:
                f.write(_MAGIC + struct.pack("<I", zlib.crc32(payload)) + payload)
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            tmp.unlink(missing_ok=True)  # a partial file must not use up what space is left
            raise
        os.replace(tmp, path)
        with self._lock:
            self._pending[path.name] = None
        self.changed.set()

    def pending(self) -> list[Path]:
        """Spooled chunks, oldest first."""
        with self._lock:
            return [self.dir / name for name in self._pending]

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def read(self, path: Path) -> pb.EpisodeChunk:
        """The chunk in `path`; a file that is not the chunk its name says (corrupt on disk) is
        moved to rejected/ with the reason and CorruptChunk raised."""
        data = path.read_bytes()
        try:
            if data[:4] == _MAGIC:
                (crc,), data = struct.unpack("<I", data[4:8]), data[8:]
                if zlib.crc32(data) != crc:
                    raise DecodeError("CRC-32 mismatch (damaged or cut short)")
            chunk = pb.EpisodeChunk.FromString(data)
            problem = None if self._name(chunk.episode_id, chunk.sequence) == path.name else (
                f"holds {chunk.episode_id!r}/{chunk.sequence}, not what its name says")
        except (DecodeError, struct.error) as exc:
            problem = f"unreadable: {exc}"
        if problem is not None:
            with self._lock:
                self._pending.pop(path.name, None)
            if path.exists():
                os.replace(path, self.dir / "rejected" / path.name)
                (self.dir / "rejected" / (path.name + ".reason.txt")).write_text(f"corrupt in the spool: {problem}\n")
            raise CorruptChunk(f"{path.name}: {problem}")
        return chunk

    def ack(self, episode_id: str, sequence: int) -> None:
        name = self._name(episode_id, sequence)
        (self.dir / name).unlink(missing_ok=True)
        with self._lock:
            self._pending.pop(name, None)

    def reject(self, episode_id: str, sequence: int, reason: str) -> None:
        name = self._name(episode_id, sequence)
        source = self.dir / name
        with self._lock:
            self._pending.pop(name, None)
        if source.exists():
            os.replace(source, self.dir / "rejected" / name)
            (self.dir / "rejected" / (name + ".reason.txt")).write_text(reason + "\n")


class SpoolWriter:
    """Sealed chunks to the spool, on a thread of its own so the control loop never waits on the
    disk. A write that fails (disk full, I/O error) is retried until it succeeds; the chunk waits
    in memory meanwhile, so no step is dropped, unless the robot is stopping and the disk still
    refuses after a second of retries."""

    def __init__(self, spool: Spool, robot_id: str):
        self.spool, self.robot_id = spool, robot_id
        self.failures = 0
        self._queue: queue.Queue[pb.EpisodeChunk | None] = queue.Queue()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._write, name="spool-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, chunk: pb.EpisodeChunk) -> None:
        self._queue.put(chunk)

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def stop(self) -> None:
        """Writes what was put so far (if the thread runs), then ends the thread."""
        self._closing.set()
        self._queue.put(None)
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=10)

    def _write(self) -> None:
        while True:
            chunk = self._queue.get()
            if chunk is None:
                return
            delay = 0.1
            while True:
                try:
                    self.spool.put(chunk)
                    break
                except OSError as exc:
                    self.failures += 1
                    if self._closing.is_set() and delay >= 1.0:  # shutting down and still failing
                        log.error("%s: DROPPING chunk %s/%d (%d steps): the spool cannot be written (%s) and "
                                  "the robot is stopping", self.robot_id, chunk.episode_id, chunk.sequence,
                                  len(chunk.steps), exc)
                        break
                    log.error("%s: cannot spool chunk %s/%d (%s); retrying in %.1f s", self.robot_id,
                              chunk.episode_id, chunk.sequence, exc, delay)
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)

"""On-disk spool: every sealed chunk waits here until the learner acknowledges it.

A chunk is one file of serialized fleet.v1.EpisodeChunk bytes, written to a temporary name,
fsynced and renamed, so a crash leaves either the whole chunk or nothing. The file is deleted
only on ack; a robot restarted with a full spool re-sends everything (the learner de-duplicates).
Chunks the learner refuses as malformed are moved to rejected/ with the reason, never deleted.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from fleet.v1 import fleet_pb2 as pb


class Spool:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "rejected").mkdir(exist_ok=True)
        self.changed = threading.Event()
        for stale in self.dir.glob("*.tmp"):
            stale.unlink()

    @staticmethod
    def _name(episode_id: str, sequence: int) -> str:
        return f"{episode_id}__{sequence:06d}.chunk"

    def put(self, chunk: pb.EpisodeChunk) -> None:
        path = self.dir / self._name(chunk.episode_id, chunk.sequence)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(chunk.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self.changed.set()

    def pending(self) -> list[Path]:
        """Spooled chunks, oldest first."""
        paths = []
        for p in self.dir.glob("*.chunk"):
            try:
                paths.append((p.stat().st_mtime_ns, p.name, p))
            except FileNotFoundError:  # acked meanwhile
                continue
        return [p for _, _, p in sorted(paths)]

    def __len__(self) -> int:
        return sum(1 for _ in self.dir.glob("*.chunk"))

    @staticmethod
    def read(path: Path) -> pb.EpisodeChunk:
        return pb.EpisodeChunk.FromString(path.read_bytes())

    def ack(self, episode_id: str, sequence: int) -> None:
        (self.dir / self._name(episode_id, sequence)).unlink(missing_ok=True)

    def reject(self, episode_id: str, sequence: int, reason: str) -> None:
        name = self._name(episode_id, sequence)
        source = self.dir / name
        if source.exists():
            os.replace(source, self.dir / "rejected" / name)
            (self.dir / "rejected" / (name + ".reason.txt")).write_text(reason + "\n")

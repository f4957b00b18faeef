"""WeightPublisher: turns the registry's current publication into announcements for robots."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from fleet.v1 import fleet_pb2 as pb
from learner.versions import Publication, VersionRegistry
from policy.checkpoint import META_FILE, sha256_file

log = logging.getLogger("fleetlearn.publisher")


def announcement_for(publication: Publication) -> pb.PolicyAnnouncement:
    meta = json.loads((publication.directory / META_FILE).read_text())
    files = [pb.PolicyFile(name=META_FILE, size_bytes=(publication.directory / META_FILE).stat().st_size,
                           sha256=sha256_file(publication.directory / META_FILE))]
    for name, digest in meta["files"].items():
        files.append(pb.PolicyFile(name=name, size_bytes=(publication.directory / name).stat().st_size, sha256=digest))
    return pb.PolicyAnnouncement(version=publication.version, files=files, published_at=publication.published_at,
                                 rollback=publication.rollback, note=publication.note)


class WeightPublisher:
    """Polls the registry and fans each new publication out to every watching robot."""

    def __init__(self, registry: VersionRegistry, poll_s: float = 0.5):
        self.registry = registry
        self.poll_s = poll_s
        self.current: pb.PolicyAnnouncement | None = None
        self.current_dir: Path | None = None
        self._publication_id: int | None = None
        self._watchers: set[asyncio.Queue] = set()

    def file_path(self, version: int, name: str) -> Path | None:
        """Path of a file of the current version, or None when it is not announced (no traversal)."""
        if self.current is None or self.current.version != version:
            return None
        if name not in {f.name for f in self.current.files}:
            return None
        return self.current_dir / name

    def poll_once(self, publication: Publication | None | object = ...) -> bool:
        """Announces the registry's current publication if it is new (`publication`: already read)."""
        if publication is ...:
            publication = self.registry.current()
        if publication is None or publication.id == self._publication_id:
            return False
        self.current = announcement_for(publication)
        self.current_dir = publication.directory
        self._publication_id = publication.id
        log.info("announcing policy version %d to %d watchers%s", publication.version, len(self._watchers),
                 " (rollback)" if publication.rollback else "")
        for q in list(self._watchers):
            q.put_nowait(self.current)
        return True

    async def run(self) -> None:
        while True:
            try:  # the registry may be across the network (Redis): read it off the event loop
                self.poll_once(await asyncio.to_thread(self.registry.current))
            except Exception:  # a half-visible version or a locked database: try again next tick
                log.exception("publisher poll failed")
            await asyncio.sleep(self.poll_s)

    def watch(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue()
        if self.current is not None:
            q.put_nowait(self.current)
        self._watchers.add(q)
        return q

    def unwatch(self, q: asyncio.Queue) -> None:
        self._watchers.discard(q)

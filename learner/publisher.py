"""WeightPublisher: turns the registry's current publication into announcements for robots."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from fleet.v1 import fleet_pb2 as pb
from learner.canary import CanarySettings, CanaryTrial, record_decision
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
    """Follows the registry and announces each new publication to the robots watching.

    With a canary (learner/canary.py), a new version (not a rollback) is first announced to the
    canary robots only; it reaches the others when promoted, or is rolled back."""

    def __init__(self, registry: VersionRegistry, poll_s: float = 0.5, canary: CanarySettings | None = None,
                 data_dir: Path | None = None):
        self.registry = registry
        self.poll_s = poll_s
        self.canary = canary or CanarySettings()
        self.data_dir = data_dir
        self.current: pb.PolicyAnnouncement | None = None      # the stable version: every robot not in a trial
        self.current_dir: Path | None = None
        self.candidate: pb.PolicyAnnouncement | None = None    # on trial on the canary robots
        self.candidate_dir: Path | None = None
        self.trial: CanaryTrial | None = None
        self.decisions: list[dict] = []
        self._publication_id: int | None = None
        self._watchers: dict[asyncio.Queue, str] = {}           # queue -> robot id

    def announced(self, version: int) -> tuple[pb.PolicyAnnouncement, Path] | None:
        for announcement, directory in ((self.current, self.current_dir), (self.candidate, self.candidate_dir)):
            if announcement is not None and announcement.version == version:
                return announcement, directory
        return None

    def file_path(self, version: int, name: str) -> Path | None:
        """Path of a file of an announced version, or None when it is not announced (no traversal)."""
        found = self.announced(version)
        if found is None or name not in {f.name for f in found[0].files}:
            return None
        return found[1] / name

    def for_robot(self, robot_id: str) -> pb.PolicyAnnouncement | None:
        if self.trial is not None and robot_id in self.trial.robots:
            return self.candidate
        return self.current

    def poll_once(self, publication: Publication | None | object = ...) -> bool:
        """Announces the registry's current publication if it is new (`publication`: already read)."""
        if publication is ...:
            publication = self.registry.current()
        if publication is None or publication.id == self._publication_id:
            return False
        self._publication_id = publication.id
        announcement = announcement_for(publication)
        if self.canary.enabled and self.current is not None and not publication.rollback \
                and publication.version != self.current.version:
            self._start_trial(announcement, publication.directory)
            return True
        self.current, self.current_dir = announcement, publication.directory
        self.candidate = self.candidate_dir = self.trial = None
        log.info("announcing policy version %d to %d watchers%s", publication.version, len(self._watchers),
                 " (rollback)" if publication.rollback else "")
        self._announce(lambda robot_id: True)
        return True

    def _start_trial(self, announcement: pb.PolicyAnnouncement, directory: Path) -> None:
        robots = sorted(set(self._watchers.values()))
        chosen = frozenset(robots[:self.canary.canary_count(len(robots))]) if robots else frozenset()
        self.candidate, self.candidate_dir = announcement, directory
        self.trial = CanaryTrial(announcement.version, self.current.version, chosen)
        log.info("canary: version %d goes to %s first (%d of %d robots); version %d stays on the others",
                 announcement.version, sorted(chosen), len(chosen), len(robots), self.current.version)
        self._announce(lambda robot_id: robot_id in chosen)

    def _announce(self, to) -> None:
        for q, robot_id in list(self._watchers.items()):
            if to(robot_id) and self.for_robot(robot_id) is not None:
                q.put_nowait(self.for_robot(robot_id))

    def episode_outcome(self, version: int, success: bool) -> dict | None:
        """A finished training or evaluation episode; returns the canary's verdict when it falls."""
        if self.trial is None:
            return None
        self.trial.record(version, success)
        decision = self.trial.decision(self.canary)
        if decision is None:
            return None
        self.decisions.append(decision)
        record_decision(self.data_dir, decision)
        if decision["promote"]:
            log.info("canary: promoting version %d (%s vs %s on version %d, p=%.3f)", decision["candidate"],
                     decision["candidate_success"], decision["stable_success"], decision["stable"], decision["p_value"])
            self.current, self.current_dir = self.candidate, self.candidate_dir
            self.candidate = self.candidate_dir = self.trial = None
            self._announce(lambda robot_id: True)
        else:
            log.warning("canary: rolling back version %d (%s vs %s on version %d, p=%.3f)", decision["candidate"],
                        decision["candidate_success"], decision["stable_success"], decision["stable"],
                        decision["p_value"])
            note = (f"canary: version {decision['candidate']} succeeded {decision['candidate_success']} against "
                    f"{decision['stable_success']} (Fisher p={decision['p_value']:.3f}); rolled back")
            self.registry.publish(decision["stable"], note=note, rollback=True)  # the next poll announces it to all
        return decision

    async def run(self) -> None:
        while True:
            try:  # the registry may be across the network (Redis): read it off the event loop
                self.poll_once(await asyncio.to_thread(self.registry.current))
            except Exception:  # a half-visible version or a locked database: try again next tick
                log.exception("publisher poll failed")
            await asyncio.sleep(self.poll_s)

    def watch(self, robot_id: str = "") -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue()
        if self.for_robot(robot_id) is not None:
            q.put_nowait(self.for_robot(robot_id))
        self._watchers[q] = robot_id
        return q

    def unwatch(self, q: asyncio.Queue) -> None:
        self._watchers.pop(q, None)

"""WeightPublisher: turns the registry's current publication into announcements for robots."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from core.tensor_ranges import TensorRangeError, file_ranges
from fleet.v1 import fleet_pb2 as pb
from learner.canary import CanarySettings, CanaryTrial, EvalKey, describe, record_decision
from learner.quarantine import Quarantine, newest_sound
from learner.versions import Publication, VersionRegistry
from policy.checkpoint import META_FILE, CheckpointError, sha256_file, verify_checkpoint

log = logging.getLogger("fleetlearn.publisher")

KEEP_EVALUATED_VERSIONS = 50  # promoted versions whose evaluation outcomes the paired canary compares against


def announcement_for(publication: Publication) -> pb.PolicyAnnouncement:
    """The announcement of a published version whose files check out (CheckpointError if not)."""
    meta = verify_checkpoint(publication.directory)
    files = [pb.PolicyFile(name=META_FILE, size_bytes=(publication.directory / META_FILE).stat().st_size,
                           sha256=sha256_file(publication.directory / META_FILE))]
    for name, digest in meta["files"].items():
        path = publication.directory / name
        spec = pb.PolicyFile(name=name, size_bytes=path.stat().st_size, sha256=digest)
        if name.endswith(".safetensors"):  # robots fetch only the tensors they do not hold
            try:
                spec.header_bytes, ranges = file_ranges(path)
            except TensorRangeError as exc:
                raise CheckpointError(f"{path}: {exc}") from None
            spec.tensors.extend(pb.TensorRange(name=r.name, offset=r.offset, length=r.length, sha256=r.sha256)
                                for r in ranges)
        files.append(spec)
    return pb.PolicyAnnouncement(version=publication.version, files=files, published_at=publication.published_at,
                                 rollback=publication.rollback, note=publication.note)


def _checked(publication: Publication) -> pb.PolicyAnnouncement | CheckpointError:
    try:
        return announcement_for(publication)
    except CheckpointError as exc:
        return exc


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
        self.waiting: tuple[pb.PolicyAnnouncement, Path] | None = None  # published during a trial
        self.decisions: list[dict] = []
        # Evaluation outcomes of the versions every robot has run (the paired canary's references).
        self.promoted_evaluations: dict[int, dict[EvalKey, bool]] = {}
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

    def is_new(self, publication: Publication | None) -> bool:
        return publication is not None and publication.id != self._publication_id

    def poll_once(self, publication: Publication | None | object = ...,
                  checked: pb.PolicyAnnouncement | CheckpointError | None = None) -> bool:
        """Announces the registry's current publication if it is new (`publication`: already read;
        `checked`: its announcement_for, or the CheckpointError it raised, already worked out)."""
        if publication is ...:
            publication = self.registry.current()
        if not self.is_new(publication):
            return False
        self._publication_id = publication.id
        announcement = checked if checked is not None else _checked(publication)
        if isinstance(announcement, CheckpointError):
            self._refuse(publication.version, announcement)
            return self.poll_once()  # the version gone back to, if any
        if self.canary.enabled and self.current is not None and not publication.rollback \
                and publication.version != self.current.version:
            if self.trial is not None:  # one trial at a time: the newest waiting version is tried next
                self.waiting = (announcement, publication.directory)
                log.info("canary: version %d waits for the verdict on version %d", announcement.version,
                         self.trial.candidate)
            else:
                self._start_trial(announcement, publication.directory)
            return True
        self._make_stable(announcement, publication.directory)
        log.info("announcing policy version %d to %d watchers%s", publication.version, len(self._watchers),
                 " (rollback)" if publication.rollback else "")
        return True

    def _refuse(self, version: int, problem: CheckpointError) -> None:
        """A published version whose files do not check out is quarantined, never announced; the
        registry goes back to the version robots run (at start: the newest one that checks out)."""
        log.error("policy version %d cannot be announced: %s", version, problem)
        self._quarantine(version, problem)
        if self.current is not None and self.current.version < version:
            fallback = self.current.version
        else:
            sound = newest_sound(self.registry, self._quarantine_of(), verify_checkpoint, before=version)
            fallback = int(sound["version"]) if sound is not None else None
        if fallback is not None:
            self.registry.publish(fallback, note=f"version {version} quarantined ({problem})", rollback=True)

    def _quarantine_of(self) -> Quarantine | None:
        return Quarantine(self.data_dir) if self.data_dir is not None else None

    def _quarantine(self, version: int, problem: CheckpointError) -> None:
        if self.data_dir is not None and self.registry.checkpoint_dir(version).exists():
            self._quarantine_of().put(self.registry.checkpoint_dir(version), "checkpoints", str(problem))

    def _make_stable(self, announcement: pb.PolicyAnnouncement, directory: Path) -> None:
        """Every robot gets `announcement`; a trial, and a version waiting for one, end."""
        record = self.promoted_evaluations.setdefault(announcement.version, {})
        if self.trial is not None and self.trial.candidate == announcement.version:
            record.update(self.trial.evaluations)
        for old in sorted(self.promoted_evaluations)[:-KEEP_EVALUATED_VERSIONS]:
            del self.promoted_evaluations[old]
        self.current, self.current_dir = announcement, directory
        self.candidate = self.candidate_dir = self.trial = self.waiting = None
        self._announce(lambda robot_id: True)

    def _start_trial(self, announcement: pb.PolicyAnnouncement, directory: Path) -> None:
        robots = sorted(set(self._watchers.values()))
        chosen = frozenset(robots[:self.canary.canary_count(len(robots))])
        if not chosen:  # fewer than two robots: nothing to compare against
            log.info("canary: %d robot(s) watching, too few for a trial; version %d goes to all",
                     len(robots), announcement.version)
            self._make_stable(announcement, directory)
            return
        self.candidate, self.candidate_dir = announcement, directory
        self.trial = CanaryTrial(announcement.version, self.current.version, chosen)
        log.info("canary: version %d goes to %s first (%d of %d robots); version %d stays on the others",
                 announcement.version, sorted(chosen), len(chosen), len(robots), self.current.version)
        self._announce(lambda robot_id: robot_id in chosen)

    def _announce(self, to) -> None:
        for q, robot_id in list(self._watchers.items()):
            if to(robot_id) and self.for_robot(robot_id) is not None:
                q.put_nowait(self.for_robot(robot_id))

    def episode_outcome(self, robot_id: str, version: int, success: bool,
                        evaluation: EvalKey | None = None) -> dict | None:
        """A finished training or evaluation episode (`evaluation`: its (task, seed) when it was
        an evaluation); returns the canary's verdict when it falls."""
        if evaluation is not None and version in self.promoted_evaluations:
            self.promoted_evaluations[version].setdefault(evaluation, bool(success))
        if self.trial is None:
            return None
        self.trial.record(robot_id, version, success, evaluation)
        decision = self.trial.decision(self.canary, self.promoted_evaluations)
        if decision is None:
            return None
        self.decisions.append(decision)
        record_decision(self.data_dir, decision)
        waiting = self.waiting
        summary = describe(decision)
        if decision["promote"]:
            log.info("canary: promoting version %d (%s)", decision["candidate"], summary)
            self._make_stable(self.candidate, self.candidate_dir)
        else:
            log.warning("canary: rolling back version %d (%s)", decision["candidate"], summary)
            self._make_stable(self.current, self.current_dir)  # every robot back on the stable version now
            note = f"canary: version {decision['candidate']} succeeded {summary}; rolled back"
            asyncio.get_running_loop().create_task(self._record_rollback(decision["stable"], note))
        if waiting is not None:
            self._start_trial(*waiting)
        return decision

    async def _record_rollback(self, version: int, note: str) -> None:
        """The rollback in the registry too, so a restart and the dashboard see it (off the loop)."""
        try:
            await asyncio.to_thread(self.registry.publish, version, note, True)
        except Exception:
            log.exception("canary: could not record the rollback to version %d in the registry", version)

    async def run(self) -> None:
        while True:
            try:  # the registry may be across the network (Redis) and the files large: both off the event loop
                publication = await asyncio.to_thread(self.registry.current)
                if self.is_new(publication):
                    self.poll_once(publication, await asyncio.to_thread(_checked, publication))
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

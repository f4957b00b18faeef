"""The dashboard's store-backed figures: recent outcomes per robot, and learning per version
(success, interventions, loss, publications, propagation), read through the store's reader and
the version registry in worker threads."""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path

from learner.metrics import version_table
from learner.quarantine import Quarantine
from learner.store import StoreReader
from learner.versions import VersionRegistry

RECENT_EPISODES = 10      # success and intervention rate over this many of a robot's last episodes


class StoreHistory:
    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self._history: dict = {"robots": {}, "at": 0.0}
        self._history_lock = threading.Lock()
        self._db: tuple[StoreReader, VersionRegistry] | None = None
        self._db_lock = threading.Lock()  # history and learning queries run in worker threads

    def _reader(self) -> tuple[StoreReader, VersionRegistry] | None:
        """The store's reader and its version registry, opened read-only once the index exists."""
        if self._db is None:
            if not (self.data_dir / "index.sqlite").exists():
                return None
            self._db = (StoreReader(self.data_dir), VersionRegistry(self.data_dir, readonly=True))
        return self._db

    def refresh(self) -> None:
        """Recent episodes per robot (call from a worker thread)."""
        with self._db_lock:
            self._refresh()

    def latest(self) -> dict:
        with self._history_lock:
            return self._history

    def _refresh(self) -> None:
        opened = self._reader()
        if opened is None:
            return
        reader, _ = opened
        now = time.time()
        robots = {}
        for robot_id, tasks in reader.robots().items():
            robots[robot_id] = dict(instructions={t["name"]: t["instruction"] for t in tasks},
                                    task=tasks[0]["name"] if tasks else "", recent={})
        for robot_id, info in robots.items():
            rows = reader.recent_outcomes(robot_id, RECENT_EPISODES)
            if rows:
                info["recent"] = dict(episodes=len(rows), success_rate=sum(r["success"] for r in rows) / len(rows),
                                      intervention_rate=sum(r["takeovers"] > 0 for r in rows) / len(rows))
        with self._history_lock:
            self._history = dict(robots=robots, at=now)

    def learning(self, robots: int, operators: int, seen_at: dict[str, dict[int, float]], running: dict[str, int],
                 ingest: list[dict]) -> dict:
        """Per-version and per-task learning figures, publications and propagation, with the
        board's `ingest` series passed through."""
        with self._db_lock:
            return self._learning(robots, operators, seen_at, running, ingest)

    def _learning(self, robots: int, operators: int, seen_at: dict[str, dict[int, float]], running: dict[str, int],
                  ingest: list[dict]) -> dict:
        opened = self._reader()
        if opened is None:
            return dict(versions=[], publications=[], ingest=[], robots_by_version={})
        reader, registry = opened
        records = registry.versions()
        # Every registered version has a row, run or not, so that any of them can be published again.
        table = version_table(reader, robots=max(robots, 1), operators=operators, versions=records, unrun=True)
        embodiment = reader.any_embodiment()
        control_hz = (embodiment.control_hz if embodiment is not None else 0.0) or 10.0
        losses, created = {}, {}
        for entry in records:
            created[entry["version"]] = entry["created_at"]
            loss = entry["info"].get("denoise_loss", entry["info"].get("loss"))
            if loss is not None:
                losses[entry["version"]] = float(loss)
        publications = [dict(version=p["version"], published_at=p["published_at"], rollback=p["rollback"],
                             note=p["note"]) for p in registry.publications()]
        first_published = {}
        for p in publications:
            first_published.setdefault(p["version"], p["published_at"])
        interventions = collections.defaultdict(dict)
        for r in reader.task_summaries("training"):
            interventions[r["version"]][r["task"]] = r["takeovers"] / r["episodes"]
        for entry in table:
            v = entry["version"]
            entry["task_interventions_per_episode"] = interventions.get(v, {})
            entry["loss"] = losses.get(v)
            entry["human_time_s"] = entry["human_steps"] / control_hz
            seen = [versions[v] for versions in seen_at.values() if v in versions]
            published = first_published.get(v)
            entry["propagation_s"] = (max(seen) - published) if seen and published else None
            entry["robots_reached"] = len(seen)
        robots_by_version: dict[int, list[str]] = collections.defaultdict(list)
        for robot_id, version in running.items():
            robots_by_version[version].append(robot_id)
        quarantined = Quarantine(self.data_dir).entries()
        return dict(versions=table, publications=publications, ingest=ingest,
                    robots_by_version={str(k): sorted(v) for k, v in robots_by_version.items()},
                    available=sorted(created), quarantine=dict(count=len(quarantined), latest=quarantined[-3:]))

    @property
    def age_s(self) -> float:
        return time.time() - self._history["at"]

    def close(self) -> None:
        with self._db_lock:
            if self._db is not None:
                for part in self._db:
                    part.close()
                self._db = None

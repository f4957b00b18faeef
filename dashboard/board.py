"""FleetBoard: what the operator dashboard shows, and the log of what people told robots to do.

Two kinds of state, kept apart so the dashboard never slows the episode stream:

- live state, in memory, updated by the control stream (heartbeats, live pictures, command
  acknowledgements) and read from FleetControl (sessions, help queue, operators);
- history, read from the store's SQLite index in a worker thread at most every couple of
  seconds (recent episodes per robot, ingest rate, per-version learning figures). The ingest
  path itself is never touched.

Every command a person issues is written to DATA/operator_commands.jsonl with who issued it, and
kept in memory with the robot's acknowledgement (accepted or refused, at which step, when).
"""

from __future__ import annotations

import base64
import collections
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fleet.v1 import fleet_pb2 as pb
from core import wire
from learner.control import FleetControl
from dashboard.history import StoreHistory
from learner.events import LearnerEvents

log = logging.getLogger("fleetlearn.dashboard")

MODE_NAMES = {
    pb.ROBOT_MODE_UNSPECIFIED: "idle", pb.ROBOT_MODE_IDLE: "idle", pb.ROBOT_MODE_AUTONOMOUS: "autonomous",
    pb.ROBOT_MODE_INTERVENTION: "intervention", pb.ROBOT_MODE_PAUSED: "paused", pb.ROBOT_MODE_STOPPED: "stopped",
    pb.ROBOT_MODE_DEMONSTRATING: "demonstrating", pb.ROBOT_MODE_WAITING_FOR_HELP: "help requested",
}
OFFLINE_AFTER_S = 5.0     # no message from a robot for this long: shown offline
HISTORY_EVERY_S = 2.0     # the SQLite-backed part of the state is refreshed at most this often
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
INGEST_BIN_S, INGEST_BINS = 10.0, 60


@dataclass
class CommandRecord:
    command_id: str
    robot_id: str
    operator: str
    action: str
    issued_at: float
    detail: str = ""
    applied_at: float | None = None   # when the robot's acknowledgement reached the learner
    effective_at: float | None = None  # when the robot applied it (the robot's clock)
    accepted: bool | None = None
    result: str = ""
    step: int | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Preview:
    seq: int
    message: pb.Preview
    _png: bytes | None = None
    _base64: str | None = None

    @property
    def png(self) -> bytes:
        """The picture as PNG: as the robot sent it, or encoded here (once) from raw pixels."""
        if self._png is None:
            image = self.message.image
            if image.encoding == pb.IMAGE_ENCODING_PNG and image.data.startswith(PNG_MAGIC):
                self._png = image.data
            else:
                self._png = wire.png_image_to_proto(image.camera, wire.image_from_proto(image)).data
        return self._png

    @property
    def base64(self) -> str:
        if self._base64 is None:
            self._base64 = base64.b64encode(self.png).decode("ascii")
        return self._base64


@dataclass
class RobotLive:
    last_message_at: float = 0.0
    preview: Preview | None = None
    version_since: dict[int, float] = field(default_factory=dict)  # version -> first heartbeat running it


class FleetBoard(LearnerEvents):
    """What the dashboard shows: live robot state from the learner's events, history from the store."""

    def __init__(self, control: FleetControl, data_dir: Path, publisher=None):
        self.control = control
        self.data_dir = Path(data_dir)
        self.publisher = publisher
        self.robots: dict[str, RobotLive] = collections.defaultdict(RobotLive)
        self.commands: collections.deque[CommandRecord] = collections.deque(maxlen=200)
        self._by_id: dict[str, CommandRecord] = {}
        self._preview_seq = 0
        self._audit_path = self.data_dir / "operator_commands.jsonl"
        self._audit_file = None  # opened at the first command, kept open (jogs come several a second)
        self.history = StoreHistory(self.data_dir)
        # Steps stored, in 10 s bins (the last ten minutes), counted as chunks are acknowledged.
        self._ingest_bins: collections.deque[list] = collections.deque(maxlen=INGEST_BINS)

    # -- live updates (control stream, event loop thread) --------------------------------------

    def ingested(self, steps: int) -> None:
        """A chunk of `steps` steps was stored (called by the episode stream: an addition, no more)."""
        start = time.time() // INGEST_BIN_S * INGEST_BIN_S
        if not self._ingest_bins or self._ingest_bins[-1][0] != start:
            self._ingest_bins.append([start, 0])
        self._ingest_bins[-1][1] += steps

    def ingest_rate(self, now: float | None = None) -> float:
        """Steps stored per second over the last full 10 s bin and the running one."""
        now = now or time.time()
        since = now // INGEST_BIN_S * INGEST_BIN_S - INGEST_BIN_S
        steps = sum(count for start, count in self._ingest_bins if start >= since)
        return steps / max(now - since, 1e-9)

    def robot_message(self, robot_id: str, message: pb.RobotMessage) -> None:
        live = self.robots[robot_id]
        live.last_message_at = time.time()
        body = message.WhichOneof("body")
        if body == "preview":
            self._preview_seq += 1
            live.preview = Preview(self._preview_seq, message.preview)
        elif body == "heartbeat":
            live.version_since.setdefault(message.heartbeat.policy_version, live.last_message_at)
        elif body == "command_applied":
            applied = message.command_applied
            record = self._by_id.get(applied.command_id)
            if record is not None:
                record.applied_at, record.accepted = live.last_message_at, applied.accepted
                record.effective_at = applied.applied_at or None
                record.result, record.step = applied.detail, applied.step_index

    def record(self, operator: str, action: str, commands: list[pb.LearnerCommand], detail: str = "",
               visible: bool = True) -> list[dict]:
        """Logs commands a person issued (the audit file, and the page's list when `visible`)
        and returns them as shown."""
        records = [CommandRecord(c.command_id, c.robot_id, operator, action, time.time(), detail) for c in commands]
        self._audit([dict(record.as_dict(), at=record.issued_at) for record in records])
        if visible:
            for record in records:
                self.commands.append(record)
                self._by_id[record.command_id] = record
            while len(self._by_id) > self.commands.maxlen:  # forget what scrolled off the list
                del self._by_id[next(iter(self._by_id))]
            log.info("%s: %s %s %s", operator, action, ",".join(c.robot_id for c in commands), detail)
        return [record.as_dict() for record in records]

    def note(self, operator: str, action: str, detail: str) -> None:
        """A fleet-wide action that is not a robot command (publishing a version again)."""
        now = time.time()
        record = CommandRecord(f"note-{now:.6f}", "fleet", operator, action, now, detail, applied_at=now,
                               accepted=True)
        self.commands.append(record)
        self._audit([dict(record.as_dict(), at=now)])

    def record_refusal(self, operator: str, action: str, robot_id: str, why: str) -> None:
        self._audit([dict(at=time.time(), operator=operator, robot_id=robot_id, action=action, refused=why)])

    def _audit(self, entries: list[dict]) -> None:
        if self._audit_file is None:
            self._audit_file = open(self._audit_path, "a", buffering=1)  # line-buffered: each entry lands whole
        for entry in entries:
            self._audit_file.write(json.dumps(entry) + "\n")

    def preview_png(self, robot_id: str) -> tuple[int, bytes] | None:
        live = self.robots.get(robot_id)
        if live is None or live.preview is None:
            return None
        try:
            return live.preview.seq, live.preview.png
        except Exception as exc:
            log.warning("preview from %s unusable: %s", robot_id, exc)
            return None

    def pictures_since(self, sent: dict[str, int]) -> dict[str, dict]:
        """The pictures that changed since those in `sent` (robot -> seq, updated), as base64 PNG:
        they travel inside the event stream, one connection for the whole fleet."""
        changed = {}
        for robot_id, live in self.robots.items():
            preview = live.preview
            if preview is not None and sent.get(robot_id) != preview.seq:
                try:
                    changed[robot_id] = {"seq": preview.seq, "png": preview.base64}
                except Exception as exc:  # a malformed picture: shown as missing, said once, the stream goes on
                    log.warning("preview from %s unusable: %s", robot_id, exc)
                sent[robot_id] = preview.seq
        return changed

    # -- the state the page renders ------------------------------------------------------------

    def snapshot(self) -> dict:
        now = time.time()
        control = self.control
        queue = control.service_order()
        queued = {t.robot_id: (i + 1, t) for i, t in enumerate(queue)}
        history = self.history.latest()
        robot_ids = sorted(set(history["robots"]) | set(control.sessions) | set(self.robots))
        robots = []
        for robot_id in robot_ids:
            session = control.sessions.get(robot_id)
            live = self.robots.get(robot_id, RobotLive())
            heartbeat = session.last_heartbeat if session else None
            online = session is not None and now - live.last_message_at < OFFLINE_AFTER_S
            mode = "offline"
            if online:
                mode = MODE_NAMES.get(heartbeat.mode if heartbeat else 0, "idle")
                if live.preview is not None and live.preview.message.sent_at >= (heartbeat.sent_at if heartbeat else 0):
                    mode = MODE_NAMES.get(live.preview.message.mode, mode)  # pictures are newer than heartbeats
            info = history["robots"].get(robot_id, {})
            ticket = queued.get(robot_id)
            step = heartbeat.step_index if heartbeat else 0
            if live.preview is not None and heartbeat and live.preview.message.episode_id == heartbeat.episode_id:
                step = max(step, live.preview.message.step_index)
            robots.append(dict(
                id=robot_id, online=online, mode=mode,
                help=None if ticket is None else dict(
                    position=ticket[0], reason=ticket[1].request.reason, score=_finite(ticket[1].request.score),
                    threshold=_finite(ticket[1].request.threshold), holding=ticket[1].request.holding,
                    waiting_s=round(control.clock() - ticket[1].received_at, 1)),
                operator=session.operator_id if session else None,
                driving=bool(session and session.driving),
                remote=bool(session and session.remote),
                version=heartbeat.policy_version if heartbeat else None,
                task=heartbeat.task if heartbeat else info.get("task"),
                instruction=info.get("instructions", {}).get(heartbeat.task if heartbeat else info.get("task"), ""),
                kind=wire.PROTO_TO_KIND.get(heartbeat.episode_kind, "") if heartbeat else "",
                episode_id=heartbeat.episode_id if heartbeat else "",
                step=step, max_steps=heartbeat.max_steps if heartbeat else 0,
                float_index=(_finite(heartbeat.float_index) or 0.0) if heartbeat else 0.0,
                float_threshold=_finite(heartbeat.float_threshold) if heartbeat else None,
                spooled_chunks=heartbeat.spooled_chunks if heartbeat else 0,
                preview_seq=live.preview.seq if live.preview else 0,
                recent=info.get("recent", {}),
            ))
        current = self.publisher.current if self.publisher else None
        return dict(
            at=now, robots=robots,
            queue=[dict(robot_id=t.robot_id, reason=t.request.reason, score=_finite(t.request.score),
                        threshold=_finite(t.request.threshold), waiting_s=round(control.clock() - t.received_at, 1))
                   for t in queue],
            priority=control.priority,
            operators=[dict(id=op, robot_id=control.assignments.get(op)) for op in control.operators],
            people=[dict(id=op, robot_id=robot) for op, robot in control.assignments.items() if op not in control.operators],
            help_requests=control.help_requests, served=control.served, cancelled=control.cancelled,
            published_version=current.version if current else None,
            ingest_steps_per_s=round(self.ingest_rate(now), 1),
            commands=[c.as_dict() for c in list(self.commands)[-25:]][::-1],
        )

    # -- history from the store (worker threads) -----------------------------------------------

    def refresh_history(self) -> None:
        """Recent episodes per robot (call from a worker thread)."""
        self.history.refresh()

    @property
    def history_age_s(self) -> float:
        """Seconds since the store-backed part of the board was last refreshed."""
        return self.history.age_s

    def fleet_versions(self) -> tuple[dict[str, dict[int, float]], dict[str, int]]:
        """Copies, made on the event loop, of when each robot first ran each version and what each
        connected robot runs now (for `learning`, which runs in a worker thread)."""
        seen = {robot_id: dict(live.version_since) for robot_id, live in self.robots.items()}
        running = {robot_id: s.last_heartbeat.policy_version for robot_id, s in self.control.sessions.items()
                   if s.last_heartbeat is not None}
        return seen, running

    def learning(self, robots: int, operators: int, seen: dict[str, dict[int, float]], running: dict[str, int]) -> dict:
        """Per-version and per-task learning figures, publications, propagation and ingest over
        time (call from a worker thread, with `fleet_versions()` taken on the event loop)."""
        now = time.time()
        ingest = [dict(t=round(start - now), steps_per_s=count / INGEST_BIN_S) for start, count in list(self._ingest_bins)]
        return self.history.learning(robots, operators, seen, running, ingest)

    def close(self) -> None:
        if self._audit_file is not None:
            self._audit_file.close()
            self._audit_file = None
        self.history.close()


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None



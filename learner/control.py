"""FleetControl: robot sessions, help requests, operator allocation and FLOAT's percentile.

Operators (people at a dashboard, or the demo's simulated operators) form a pool. A robot that
asks for help is queued; a free operator is assigned and the robot is told to hand control to it.

Order of service (`priority`)
    "fifo"   first come first served (ARMADA's hub).
    "float"  the highest FLOAT index over its threshold first (score / threshold when the request
             carries one, the score otherwise); ties first come first served.

Minimum time (`min_assignment_s`, Fleet-DAgger's minimum intervention time)
    An operator stays with a robot at least this long once assigned. If the robot hands back
    earlier (a short takeover, or "continue" on a false alarm), the operator keeps watching it:
    a new help request from that robot within the window goes straight back to the same operator,
    and the operator returns to the pool once the window is over.

Every request ends served (an operator assigned) or cancelled: the robot withdrew it
(HelpCancelled: it waited too long), its episode ended, or its control stream closed.

FLOAT's percentile p per task moves with the feedback of finished training episodes
(monitor.calibration.PercentileBook); every change is sent to every connected robot.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from dataclasses import dataclass, field

from fleet.v1 import fleet_pb2 as pb
from monitor.calibration import PercentileBook

log = logging.getLogger("fleetlearn.control")

PRIORITIES = ("fifo", "float")


@dataclass
class RobotSession:
    robot_id: str
    commands: asyncio.Queue = field(default_factory=asyncio.Queue)
    last_heartbeat: pb.Heartbeat | None = None
    last_seen: float = field(default_factory=time.time)
    operator_id: str | None = None
    assigned_at: float = 0.0
    driving: bool = False  # the operator is in control now (not just watching out the minimum time)


@dataclass
class HelpTicket:
    robot_id: str
    request: pb.HelpRequest
    arrival: int
    received_at: float

    @property
    def urgency(self) -> float:
        r = self.request
        return r.score / r.threshold if r.threshold > 0 else r.score


class FleetControl:
    def __init__(self, operators: list[str], priority: str = "fifo", min_assignment_s: float = 0.0,
                 percentiles: PercentileBook | None = None, clock=time.monotonic):
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}, got {priority!r}")
        self.operators = list(operators)
        self.free_operators: list[str] = list(operators)
        self.priority = priority
        self.min_assignment_s = min_assignment_s
        self.percentiles = percentiles or PercentileBook()
        self.clock = clock
        self.sessions: dict[str, RobotSession] = {}
        self.waiting: list[HelpTicket] = []
        self.assignments: dict[str, str] = {}  # operator -> robot
        self.help_requests = self.served = self.cancelled = 0
        self._arrivals = itertools.count()

    # -- sessions ------------------------------------------------------------------------------

    def open(self, robot_id: str) -> RobotSession:
        if robot_id in self.sessions:
            self._drop(robot_id, "the robot reconnected")
        session = RobotSession(robot_id)
        self.sessions[robot_id] = session
        for task, percentile in self.percentiles.percentiles.items():  # the fleet's current thresholds
            self.send(robot_id, set_float_threshold=pb.SetFloatThreshold(task=task, percentile=percentile))
        return session

    def close(self, robot_id: str, session: RobotSession) -> None:
        if self.sessions.get(robot_id) is session:
            self._drop(robot_id, "its control stream closed")
            del self.sessions[robot_id]
            self._assign()

    def _drop(self, robot_id: str, why: str) -> None:
        self._release(robot_id, force=True)
        self._cancel(robot_id, why)

    # -- messages ------------------------------------------------------------------------------

    def on_message(self, robot_id: str, message: pb.RobotMessage) -> None:
        session = self.sessions[robot_id]
        session.last_seen = time.time()
        body = message.WhichOneof("body")
        if body == "heartbeat":
            session.last_heartbeat = message.heartbeat
        elif body == "help":
            self.help_requests += 1
            self._on_help(session, message.help)
        elif body == "help_cancelled":
            self._cancel(robot_id, message.help_cancelled.reason or "withdrawn by the robot")
        elif body == "takeover_ended":
            session.driving = False
            self._release(robot_id)
        self.tick()

    def tick(self) -> None:
        """Frees operators whose minimum time is over, then serves the queue (call periodically)."""
        for session in self.sessions.values():
            if session.operator_id and not session.driving:
                self._release(session.robot_id)
        self._assign()

    def _on_help(self, session: RobotSession, request: pb.HelpRequest) -> None:
        if session.operator_id is not None:
            if not session.driving:  # its operator is still watching (minimum time): straight back
                self._hand_to(session, session.operator_id, request, queued_s=0.0)
            return
        if any(t.robot_id == session.robot_id for t in self.waiting):
            return
        self.waiting.append(HelpTicket(session.robot_id, request, next(self._arrivals), self.clock()))

    def _cancel(self, robot_id: str, why: str) -> None:
        kept = [t for t in self.waiting if t.robot_id != robot_id]
        if len(kept) != len(self.waiting):
            self.cancelled += len(self.waiting) - len(kept)
            log.info("help request of %s cancelled: %s", robot_id, why)
        self.waiting = kept

    def episode_feedback(self, task: str, summary: pb.FloatSummary, success: bool) -> float | None:
        """A finished training episode that FLOAT watched: moves p on a false alarm or a missed
        failure and tells every robot. Returns the new p, if it moved."""
        if not summary.ran:
            return None
        percentile = self.percentiles.feedback(task, summary.fired, summary.operator_continued, success)
        if percentile is not None:
            for robot_id in list(self.sessions):
                self.send(robot_id, set_float_threshold=pb.SetFloatThreshold(task=task, percentile=percentile))
        return percentile

    def send(self, robot_id: str, **body) -> pb.LearnerCommand:
        """Queues a command for a connected robot; raises KeyError for an unknown one."""
        session = self.sessions[robot_id]
        command = pb.LearnerCommand(command_id=uuid.uuid4().hex, robot_id=robot_id, **body)
        session.commands.put_nowait(command)
        return command

    # -- allocation ----------------------------------------------------------------------------

    def _release(self, robot_id: str, force: bool = False) -> None:
        """Returns the robot's operator to the pool once its minimum time is over (or at once)."""
        session = self.sessions.get(robot_id)
        if not session or not session.operator_id:
            return
        if not force and self.clock() - session.assigned_at < self.min_assignment_s:
            return  # stays with this robot a little longer
        operator = session.operator_id
        session.operator_id, session.driving = None, False
        self.assignments.pop(operator, None)
        self.free_operators.append(operator)

    def _next_ticket(self) -> HelpTicket:
        if self.priority == "float":
            ticket = max(self.waiting, key=lambda t: (t.urgency, -t.arrival))
        else:
            ticket = min(self.waiting, key=lambda t: t.arrival)
        self.waiting.remove(ticket)
        return ticket

    def _assign(self) -> None:
        while self.free_operators and self.waiting:
            ticket = self._next_ticket()
            session = self.sessions.get(ticket.robot_id)
            if session is None:
                continue
            self._hand_to(session, self.free_operators.pop(0), ticket.request, self.clock() - ticket.received_at)

    def _hand_to(self, session: RobotSession, operator: str, request: pb.HelpRequest, queued_s: float) -> None:
        if session.operator_id is None:
            session.assigned_at = self.clock()
        session.operator_id, session.driving = operator, True
        self.assignments[operator] = session.robot_id
        self.served += 1
        self.send(session.robot_id, take_over=pb.TakeOver(operator_id=operator))
        log.info("operator %s takes over %s (%s, score %.3g, waited %.1f s)", operator, session.robot_id,
                 request.reason, request.score, queued_s)

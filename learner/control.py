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
(HelpCancelled: it waited too long), its episode ended, or its control stream closed. Always
help_requests == served + cancelled + len(waiting); a repeat request from a robot already queued
is the same request.

People at the dashboard are operators too, outside the pool: `person_take_over` (drive a robot
from the browser with `jog`; it preempts a simulated operator), `person_hand_back`, `answer`
(continue / take over / end the episode, which serves the robot's help request) and `broadcast`
(pause, resume, stop). A person never drives two robots at once, and two people never one robot.

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
ANSWERS = ("continue", "take_over", "end")


class ControlError(ValueError):
    """A person's command that cannot be carried out (the message says why)."""


class RobotNotConnected(ControlError):
    """The command names a robot without an open control stream."""


@dataclass
class RobotSession:
    robot_id: str
    commands: asyncio.Queue = field(default_factory=asyncio.Queue)
    last_heartbeat: pb.Heartbeat | None = None
    last_seen: float = field(default_factory=time.time)
    operator_id: str | None = None
    assigned_at: float = 0.0
    driving: bool = False  # the operator is in control now (not just watching out the minimum time)
    remote: bool = False   # the driving person jogs it from the dashboard (not its own teleop device)
    # A person's takeover not yet accepted by the robot, and the help request it answered: if the
    # robot refuses (CommandApplied, accepted false), the request goes back in the queue.
    takeover_command: str | None = None
    answered: "HelpTicket | None" = None


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
            self._on_help(session, message.help)
        elif body == "help_cancelled":
            self._cancel(robot_id, message.help_cancelled.reason or "withdrawn by the robot")
        elif body == "takeover_ended":
            # Only the takeover of the robot's current operator counts: a simulated operator that a
            # person preempted reports its end after the person's takeover was sent.
            if message.takeover_ended.operator_id in ("", session.operator_id):
                session.driving = False
                self._release(robot_id, force=session.operator_id not in self.operators)
        elif body == "command_applied":
            applied = message.command_applied
            if applied.command_id == session.takeover_command:
                session.takeover_command = None
                if not applied.accepted and session.answered is not None:  # refused: the request stands
                    self.served -= 1
                    self.waiting.append(session.answered)
                session.answered = None
        self.tick()

    def tick(self) -> None:
        """Frees operators whose minimum time is over, then serves the queue (call periodically)."""
        for session in self.sessions.values():
            if session.operator_id and not session.driving:
                self._release(session.robot_id)
        self._assign()

    def _on_help(self, session: RobotSession, request: pb.HelpRequest) -> None:
        if any(t.robot_id == session.robot_id for t in self.waiting):
            return  # the robot repeated the request it has queued
        self.help_requests += 1
        if session.operator_id is not None:
            if not session.driving:  # its operator is still watching (minimum time): straight back
                self._hand_to(session, session.operator_id, request, queued_s=0.0)
            else:  # asked just before its operator's takeover reached it: that takeover serves it
                self.served += 1
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
        if operator in self.operators:  # people are not part of the pool
            self.free_operators.append(operator)

    def service_order(self) -> list[HelpTicket]:
        """The waiting requests in the order operators will serve them."""
        if self.priority == "float":
            return sorted(self.waiting, key=lambda t: (-t.urgency, t.arrival))
        return sorted(self.waiting, key=lambda t: t.arrival)

    def _next_ticket(self) -> HelpTicket:
        ticket = self.service_order()[0]
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
        self.send(session.robot_id, take_over=pb.TakeOver(operator_id=operator, assess=True))
        log.info("operator %s takes over %s (%s, score %.3g, waited %.1f s)", operator, session.robot_id,
                 request.reason, request.score, queued_s)

    # -- people at the dashboard ---------------------------------------------------------------

    def _session(self, robot_id: str) -> RobotSession:
        session = self.sessions.get(robot_id)
        if session is None:
            raise RobotNotConnected(f"robot {robot_id!r} is not connected")
        return session

    def _serve_request_by(self, robot_id: str, person: str) -> HelpTicket | None:
        """A person answered the robot's help request: it leaves the queue as served."""
        ticket = next((t for t in self.waiting if t.robot_id == robot_id), None)
        if ticket is not None:
            self.waiting.remove(ticket)
            self.served += 1
            log.info("%s answers the help request of %s", person, robot_id)
        return ticket

    def person_take_over(self, robot_id: str, person: str, remote: bool = True) -> pb.LearnerCommand:
        """The person drives `robot_id`: from afar with Jog commands (`remote`), or with the
        robot's own teleop device (a person standing at the robot). A simulated operator driving
        it is sent back to the pool; another person driving it, or this person driving another
        robot, is refused."""
        session = self._session(robot_id)
        elsewhere = self.assignments.get(person)
        if elsewhere is not None and elsewhere != robot_id:
            raise ControlError(f"{person} is driving {elsewhere}: hand it back first")
        current = session.operator_id
        if current == person:
            raise ControlError(f"{person} is already driving {robot_id}")
        if current is not None and current not in self.operators:
            raise ControlError(f"{current} is driving {robot_id}")
        if current is not None:  # a simulated operator: back to the pool, its takeover ends now
            self._release(robot_id, force=True)
            self.send(robot_id, hand_back=pb.HandBack())
        session.answered = self._serve_request_by(robot_id, person)
        session.operator_id, session.driving, session.assigned_at = person, True, self.clock()
        session.remote = remote
        self.assignments[person] = robot_id
        command = self.send(robot_id, take_over=pb.TakeOver(operator_id=person, remote=remote))
        session.takeover_command = command.command_id
        self._assign()  # a freed simulated operator may serve the queue
        return command

    def person_hand_back(self, robot_id: str, person: str) -> pb.LearnerCommand:
        session = self._session(robot_id)
        if session.operator_id != person:
            raise ControlError(f"{person} is not driving {robot_id}")
        return self.send(robot_id, hand_back=pb.HandBack())

    def jog(self, robot_id: str, person: str, dx: float, dy: float, dz: float, duration_s: float,
            gripper: float | None = None) -> pb.LearnerCommand:
        session = self._session(robot_id)
        if session.operator_id != person or not session.driving:
            raise ControlError(f"{person} is not driving {robot_id}: take it over first")
        if not session.remote:
            raise ControlError(f"{robot_id} is driven by its own teleop device, not from the dashboard")
        jog = pb.Jog(operator_id=person, dx=dx, dy=dy, dz=dz, duration_s=duration_s)
        if gripper is not None:
            jog.gripper = gripper
        return self.send(robot_id, jog=jog)

    def answer(self, robot_id: str, person: str, answer: str) -> pb.LearnerCommand:
        """A person's answer to a robot's help request: "continue" (a false alarm), "take_over"
        (drive it from the dashboard) or "end" (give the episode up)."""
        if answer not in ANSWERS:
            raise ControlError(f"answer must be one of {ANSWERS}, got {answer!r}")
        if answer == "take_over":
            return self.person_take_over(robot_id, person)
        current = self._session(robot_id).operator_id
        if current is not None and current != person and current not in self.operators:
            raise ControlError(f"{current} is driving {robot_id}")
        self._serve_request_by(robot_id, person)
        if answer == "continue":
            return self.send(robot_id, continue_episode=pb.ContinueEpisode(operator_id=person))
        return self.send(robot_id, end_episode=pb.EndEpisode(operator_id=person))

    def broadcast(self, robot_ids: list[str], **body) -> list[pb.LearnerCommand]:
        """The same command (pause, resume, stop) to each robot; unknown ones are refused first."""
        for robot_id in robot_ids:
            self._session(robot_id)
        return [self.send(robot_id, **body) for robot_id in robot_ids]


# -- commands by name (the dashboard, and other replicas through the control relay) -----------

BROADCASTS = {"pause": pb.Pause, "resume": pb.Resume, "stop": pb.Stop}


def apply_command(control: FleetControl, op: str, robot_id: str, args: dict) -> list[pb.LearnerCommand]:
    """A person's command as plain data (what a relay can carry): `op` with JSON `args`."""
    person = args.get("operator", "")
    if op == "take_over":
        return [control.person_take_over(robot_id, person, remote=bool(args.get("remote", True)))]
    if op == "hand_back":
        return [control.person_hand_back(robot_id, person)]
    if op == "answer":
        return [control.answer(robot_id, person, args["answer"])]
    if op == "jog":
        return [control.jog(robot_id, person, float(args["dx"]), float(args["dy"]), float(args["dz"]),
                            float(args["duration_s"]), args.get("gripper"))]
    if op in BROADCASTS:
        return control.broadcast([robot_id], **{op: BROADCASTS[op]()})
    raise ControlError(f"no robot command {op!r}")

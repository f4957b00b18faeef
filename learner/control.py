"""FleetControl: robot sessions, help requests and operator allocation.

Operators (people at a dashboard, or the demo's simulated operators) form a pool. A robot that
asks for help is queued; a free operator is assigned first come first served (ARMADA's rule) and
the robot is told to hand control to it. The operator is freed when the robot reports that the
takeover ended, or when the robot's control stream dies (dead-peer cleanup).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from dataclasses import dataclass, field

from fleet.v1 import fleet_pb2 as pb

log = logging.getLogger("fleetlearn.control")


@dataclass
class RobotSession:
    robot_id: str
    commands: asyncio.Queue = field(default_factory=asyncio.Queue)
    last_heartbeat: pb.Heartbeat | None = None
    last_seen: float = field(default_factory=time.time)
    operator_id: str | None = None


class FleetControl:
    def __init__(self, operators: list[str]):
        self.free_operators: collections.deque[str] = collections.deque(operators)
        self.operators = list(operators)
        self.sessions: dict[str, RobotSession] = {}
        self.waiting: collections.deque[tuple[str, pb.HelpRequest]] = collections.deque()
        self.assignments: dict[str, str] = {}  # operator -> robot
        self.help_requests = 0

    def open(self, robot_id: str) -> RobotSession:
        old = self.sessions.get(robot_id)
        if old is not None:
            self._release(robot_id)
        session = RobotSession(robot_id)
        self.sessions[robot_id] = session
        return session

    def close(self, robot_id: str, session: RobotSession) -> None:
        if self.sessions.get(robot_id) is session:
            self._release(robot_id)
            del self.sessions[robot_id]
            self.waiting = collections.deque((r, h) for r, h in self.waiting if r != robot_id)

    def on_message(self, robot_id: str, message: pb.RobotMessage) -> None:
        session = self.sessions[robot_id]
        session.last_seen = time.time()
        body = message.WhichOneof("body")
        if body == "heartbeat":
            session.last_heartbeat = message.heartbeat
        elif body == "help":
            self.help_requests += 1
            if session.operator_id is None and all(r != robot_id for r, _ in self.waiting):
                self.waiting.append((robot_id, message.help))
            self._assign()
        elif body == "takeover_ended":
            self._release(robot_id)
            self._assign()

    def send(self, robot_id: str, **body) -> pb.LearnerCommand:
        """Queues a command for a connected robot; raises KeyError for an unknown one."""
        session = self.sessions[robot_id]
        command = pb.LearnerCommand(command_id=uuid.uuid4().hex, robot_id=robot_id, **body)
        session.commands.put_nowait(command)
        return command

    def _release(self, robot_id: str) -> None:
        session = self.sessions.get(robot_id)
        if session and session.operator_id:
            operator = session.operator_id
            session.operator_id = None
            self.assignments.pop(operator, None)
            self.free_operators.append(operator)

    def _assign(self) -> None:
        while self.free_operators and self.waiting:
            robot_id, request = self.waiting.popleft()
            session = self.sessions.get(robot_id)
            if session is None:
                continue
            operator = self.free_operators.popleft()
            session.operator_id = operator
            self.assignments[operator] = robot_id
            self.send(robot_id, take_over=pb.TakeOver(operator_id=operator))
            log.info("operator %s takes over %s (%s, score %.2f)", operator, robot_id, request.reason, request.score)

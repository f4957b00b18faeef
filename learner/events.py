"""What the learner tells the layers above it, without importing them.

The servicer calls these as things happen; an extension (the operator dashboard, a metrics
exporter) subscribes by implementing the methods it cares about and is started and stopped with
the learner. The learner never imports an extension: the command line or a test hands them in.
"""

from __future__ import annotations

import logging
from typing import Protocol

from fleet.v1 import fleet_pb2 as pb

log = logging.getLogger("fleetlearn.events")


class LearnerEvents:
    """The events, each a no-op here: subscribers override what they use. Called on the server's
    event loop, so they must return at once."""

    def ingested(self, steps: int) -> None:
        """`steps` steps of a new chunk were stored durably."""

    def robot_message(self, robot_id: str, message: pb.RobotMessage) -> None:
        """A robot's control-stream message (heartbeat, state, picture, help request) arrived."""


class EventFanout(LearnerEvents):
    """Hands every event to each subscriber in turn; one that raises is logged, not fatal."""

    def __init__(self):
        self.subscribers: list[LearnerEvents] = []

    def subscribe(self, subscriber: LearnerEvents) -> None:
        self.subscribers.append(subscriber)

    def ingested(self, steps: int) -> None:
        self._each("ingested", steps)

    def robot_message(self, robot_id: str, message: pb.RobotMessage) -> None:
        self._each("robot_message", robot_id, message)

    def _each(self, name: str, *args) -> None:
        for subscriber in self.subscribers:
            try:
                getattr(subscriber, name)(*args)
            except Exception:  # noqa: BLE001 (an extension's bug must not cost a robot its stream)
                log.exception("learner event %s: subscriber %r failed", name, subscriber)


class LearnerExtension(Protocol):
    """Something started with the learner and stopped before it (the operator dashboard)."""

    async def start(self, learner) -> None: ...

    async def stop(self) -> None: ...

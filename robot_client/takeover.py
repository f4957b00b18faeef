"""TakeoverController: who drives the arm, and the action-source label of every step.

    AUTONOMOUS --take_over(op)--> INTERVENTION --hand_back--> AUTONOMOUS
    any --pause--> PAUSED --resume--> previous;  any --stop--> STOPPED

Commands arrive from the control stream (another thread) and are applied at tick boundaries by
the control loop, so a step's label always matches who chose its action.
"""

from __future__ import annotations

import enum


class Mode(enum.Enum):
    AUTONOMOUS = "autonomous"
    INTERVENTION = "intervention"
    PAUSED = "paused"
    STOPPED = "stopped"


class TakeoverController:
    def __init__(self):
        self.mode = Mode.AUTONOMOUS
        self.operator_id: str | None = None
        self.human_steps = 0  # steps of the current takeover
        self._before_pause = Mode.AUTONOMOUS

    @property
    def under_takeover(self) -> bool:
        return self.mode is Mode.INTERVENTION

    @property
    def holds_takeover(self) -> bool:
        """A takeover is active, or paused and resumes when the robot does."""
        return self.under_takeover or (self.mode is Mode.PAUSED and self._before_pause is Mode.INTERVENTION)

    def take_over(self, operator_id: str) -> bool:
        if self.mode is not Mode.AUTONOMOUS:
            return False
        self.mode = Mode.INTERVENTION
        self.operator_id = operator_id
        self.human_steps = 0
        return True

    def hand_back(self) -> tuple[str, int] | None:
        """Ends a takeover (a paused one too: the robot resumes autonomous); returns (operator,
        human steps) or None when none was active."""
        if not self.holds_takeover:
            return None
        ended = (self.operator_id, self.human_steps)
        if self.mode is Mode.PAUSED:
            self._before_pause = Mode.AUTONOMOUS
        else:
            self.mode = Mode.AUTONOMOUS
        self.operator_id = None
        self.human_steps = 0
        return ended

    def pause(self) -> None:
        if self.mode not in (Mode.PAUSED, Mode.STOPPED):
            self._before_pause = self.mode
            self.mode = Mode.PAUSED

    def resume(self) -> None:
        if self.mode is Mode.PAUSED:
            self.mode = self._before_pause

    def stop(self) -> None:
        self.mode = Mode.STOPPED

    def source_label(self) -> str:
        """Action-source label for the step about to be executed."""
        return "intervention" if self.mode is Mode.INTERVENTION else "autonomous"

    def record_step(self) -> None:
        if self.mode is Mode.INTERVENTION:
            self.human_steps += 1

"""Teleop sources: whoever drives the arm while a takeover is active.

A person's leader arm or gamepad (LeRobot, later) and the simulated operator below share this
interface, so the takeover state machine never knows which one it got.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from robot_client.driver import Observation


class TeleopSource(Protocol):
    def begin(self, operator_id: str) -> None:
        """An operator has just taken control."""

    def action(self, observation: Observation) -> np.ndarray:
        """The operator's action for this tick."""

    def wants_hand_back(self) -> bool:
        """True once the operator is done and control should return to the policy."""


class ScriptedOperator:
    """The sim's scripted expert standing in for a person.

    It drives for at least `segment_steps` ticks (the operator's minimum time on a robot, as in
    Fleet-DAgger) and then hands control back.
    """

    def __init__(self, driver, segment_steps: int = 20):
        import sim

        self._sim = sim
        self.driver = driver
        self.segment_steps = segment_steps
        self.steps = 0

    def expert_action(self) -> np.ndarray:
        """What the expert would do now (also used by the simulated help rule)."""
        return np.asarray(self._sim.make_expert(self.driver.env).act(self.driver.env), np.float32)

    def begin(self, operator_id: str) -> None:
        self.steps = 0

    def action(self, observation: Observation) -> np.ndarray:
        self.steps += 1
        return self.expert_action()

    def wants_hand_back(self) -> bool:
        return self.steps >= self.segment_steps

"""Teleop sources: whoever drives the arm while a takeover is active.

A person's leader arm or gamepad (LeRobot, later) and the simulated operator below share this
interface, so the takeover state machine never knows which one it got.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from robot_client.driver import Observation
from robot_client.operators import OperatorBehaviour, OperatorModel, hold_action

# An expert: (raw observation dict as the env returned it, the env) -> action. It may read
# privileged state from the env (the sim's experts do), so it can take over from any state.
Expert = Callable[[dict, Any], np.ndarray]


@runtime_checkable
class TeleopSource(Protocol):
    """What the control loop uses of whoever drives during a takeover (and records
    demonstrations). `TeleopBase` gives the optional members their defaults."""

    def begin(self, operator_id: str) -> None:
        """An operator has just taken control."""

    def action(self, observation: Observation) -> np.ndarray:
        """The operator's action for this tick."""

    def wants_hand_back(self) -> bool:
        """True once the operator is done and control should return to the policy."""

    # Optional, defaults in TeleopBase.
    can_drive: bool  # False: refuse takeovers by this robot's own device (there is none)
    operator_id: str  # who takes over when the device itself asks to
    # The last `action` held the robot still because the person had not acted yet (a reaction
    # delay, no jog key down): executed and recorded, but not the person's answer to the
    # state, so the learner does not take it as a label (step extra "operator_holding").
    holding: bool

    def expert_action(self) -> np.ndarray:
        """The action a demonstration records this tick."""

    def poll(self) -> None:
        """Once per tick, before the policy acts: read the device's own events."""

    def wants_take_over(self) -> bool:
        """The device itself asks for a takeover (a gamepad's intervention button)."""

    def assess(self, policy_action: np.ndarray) -> str:
        """A help request's answer from a simulated operator: "take_over" or "continue"."""

    def close(self) -> None: ...


class TeleopBase:
    """The optional part of `TeleopSource` as defaults: a device without events, which takes over
    whenever asked and has nothing of its own to close."""

    can_drive = True
    operator_id = "teleop"
    holding = False

    def expert_action(self) -> np.ndarray:
        raise RuntimeError(f"{type(self).__name__} records no demonstrations")

    def poll(self) -> None:
        pass

    def wants_take_over(self) -> bool:
        return False

    def assess(self, policy_action: np.ndarray) -> str:
        return "take_over"  # a person who took over has already judged

    def close(self) -> None:
        pass


class ScriptedOperator(TeleopBase):
    """A scripted expert standing in for a person, as imperfect as `model` says a person is.

    It drives for at least `segment_steps` ticks (the operator's minimum time on a robot, as in
    Fleet-DAgger) and then hands control back. `expert` defaults to the driver's own (`SimDriver`
    has one for every sim task); a bring-your-own environment passes its own.

    From the driver it reads `raw_observation` and `env` (what the expert sees), `last_action`
    (the command to hold while reacting), `action_dim`, `setpoint_action_dims` and `episodes`
    (to notice that a demonstration started); `GymDriver` and `SimDriver` provide all of them.
    """

    def __init__(self, driver, segment_steps: int = 20, *, expert: Expert | None = None,
                 model: OperatorModel | None = None, continue_below: float = 0.5):
        expert = expert if expert is not None else getattr(driver, "expert", None)
        if expert is None:
            raise ValueError("ScriptedOperator needs an expert (observation, env) -> action; this driver has none")
        self.driver = driver
        self.expert = expert
        self.segment_steps = segment_steps
        self.continue_below = continue_below
        self.model = model if model is not None else OperatorModel()
        self.behaviour = OperatorBehaviour(self.model, driver.action_dim, getattr(driver, "setpoint_action_dims", ()))
        self.steps = 0
        self._episode_seen: int | None = None

    def reference_action(self) -> np.ndarray:
        """The unperturbed expert's action now: the simulated help rule's reference.

        The help rule stands in for a risk estimate, so it compares the policy with the best
        action known, not with a shaky hand.
        """
        return np.asarray(self.expert(self.driver.raw_observation, self.driver.env), np.float32)

    def expert_action(self) -> np.ndarray:
        """The person's action at the controls without a reaction delay: what demonstrations record.

        People record demonstrations too, so the same model applies (noise and wander), but a
        demonstration starts with the person ready, so there is no hold-still start. Call once
        per tick; a new driver episode restarts the person's wander.
        """
        episode = getattr(self.driver, "episodes", None)
        if episode != self._episode_seen:
            self._episode_seen = episode
            self.behaviour.start(react=False)
        return self.behaviour.perturb(self.reference_action())

    def assess(self, policy_action: np.ndarray) -> str:
        """Called to a robot that asked for help: "continue" when the policy's next action agrees
        with the expert's (distance of the motion part below `continue_below`, in action units:
        a person watching sees the arm heading the right way), else "take_over"."""
        distance = float(np.linalg.norm(np.asarray(policy_action)[:3] - self.reference_action()[:3]))
        return "continue" if distance < self.continue_below else "take_over"

    def begin(self, operator_id: str) -> None:
        self.steps = 0
        self.behaviour.start(react=True)

    def action(self, observation: Observation) -> np.ndarray:
        self.steps += 1
        return self.behaviour.act(self.reference_action, self._hold)

    def wants_hand_back(self) -> bool:
        return self.steps >= self.segment_steps

    @property
    def holding(self) -> bool:
        return self.behaviour.holding

    def _hold(self) -> np.ndarray:
        # Before the robot's first command of an episode there is nothing to repeat: hold the
        # set-points the expert would command now.
        last = self.driver.last_action
        return hold_action(self.driver.action_dim, self.behaviour.setpoint_dims,
                           last if last is not None else self.reference_action())


class NoOperator(TeleopBase):
    """The teleop source of a robot without a simulated operator (`fleet robot --env` without
    `--expert`). Such a robot never asks for help, so the learner never assigns it an operator;
    if a takeover is accepted anyway there is nobody to drive, and failing loudly beats
    recording made-up "human" steps.
    """

    can_drive = False  # the robot refuses takeovers by its own teleop device

    def begin(self, operator_id: str) -> None:
        raise RuntimeError(f"operator {operator_id!r} took over, but this robot has no operator to drive it "
                           "(run it with --expert to simulate one)")

    def action(self, observation: Observation) -> np.ndarray:
        raise RuntimeError("this robot has no operator")

    def wants_hand_back(self) -> bool:
        return True

    def expert_action(self) -> np.ndarray:
        raise RuntimeError("demonstrations need an expert (--expert MODULE:FACTORY)")


class RemoteJog(TeleopBase):
    """A person driving from afar (the dashboard's jog keys and buttons) through Jog commands.

    Each jog sets an end-effector velocity (action units, one per world axis) that holds for the
    jog's duration and then drops to zero: a dead man's switch, so a lost connection or a closed
    browser tab cannot leave the arm moving. The page repeats jogs while a key is held. A jog may
    also set the gripper; otherwise the gripper keeps its last command.

    It needs a driver whose actions start with an end-effector velocity (`jog_dims`, the sim's
    (dx, dy, dz)); `SimDriver` is one. Jogs are applied by the control loop's thread only.
    """

    MAX_DURATION_S = 2.0
    # No jog for this long: the person is gone (page closed, learner restarted): hand back.
    IDLE_HAND_BACK_S = 30.0

    def __init__(self, driver, jog_dims: tuple[int, int, int] = (0, 1, 2), clock=time.monotonic):
        if len(jog_dims) != 3 or any(not 0 <= d < driver.action_dim for d in jog_dims):
            raise ValueError(f"jog dimensions {jog_dims} must be three action dimensions of {driver.action_dim}")
        self.driver = driver
        self.jog_dims = list(jog_dims)
        self.setpoint_dims = tuple(getattr(driver, "setpoint_action_dims", ()))
        self.clock = clock
        self.operator_id: str | None = None
        self._velocity = np.zeros(3, np.float32)
        self._until = 0.0
        self._gripper: float | None = None
        self._gripper_changed = False  # a jog set the gripper since the last tick
        self._last_jog = 0.0

    def jog(self, dx: float, dy: float, dz: float, duration_s: float, gripper: float | None = None) -> None:
        velocity = np.array([dx, dy, dz], np.float64)
        if not np.all(np.isfinite(velocity)) or not np.isfinite(duration_s) or duration_s < 0:
            raise ValueError(f"jog needs finite velocities and a duration >= 0, got {velocity.tolist()}, {duration_s}")
        if gripper is not None:
            if not self.setpoint_dims:
                raise ValueError("this robot has no gripper set-point to jog")
            if not np.isfinite(gripper):
                raise ValueError(f"gripper set-point must be finite, got {gripper}")
            self._gripper = float(np.clip(gripper, -1.0, 1.0))
            self._gripper_changed = True
        self._velocity = np.clip(velocity, -1.0, 1.0).astype(np.float32)
        self._until = self.clock() + min(float(duration_s), self.MAX_DURATION_S)
        self._last_jog = self.clock()

    def begin(self, operator_id: str) -> None:
        self.operator_id = operator_id
        self._velocity[:] = 0.0
        self._until = 0.0
        self._gripper = None
        self._gripper_changed = False
        self._last_jog = self.clock()

    def action(self, observation: Observation) -> np.ndarray:
        last = self.driver.last_action
        action = hold_action(self.driver.action_dim, self.setpoint_dims,
                             last if last is not None else np.zeros(self.driver.action_dim, np.float32))
        if self._gripper is not None:
            action[list(self.setpoint_dims)[0]] = self._gripper
        jogging = self.clock() < self._until
        if jogging:
            action[self.jog_dims] = self._velocity
        self.holding = not (jogging or self._gripper_changed)
        self._gripper_changed = False
        return action

    def wants_hand_back(self) -> bool:
        """The person hands back from the dashboard (a HandBack command); a takeover whose person
        stopped jogging long ago (a closed page, a lost connection) ends by itself."""
        return self.clock() - self._last_jog > self.IDLE_HAND_BACK_S

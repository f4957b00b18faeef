"""The fleet's MuJoCo arm as a LeRobot Robot, and its scripted expert as a LeRobot Teleoperator.

Registered in LeRobot's own config registries ("fleet_sim_arm", "fleet_expert"), so LeRobot's
tools and the fleet's generic LeRobot driver build them like any SO-101 or gamepad:

    robot = make_robot_from_config(FleetSimArmConfig(id="arm-1", task="reach"))

Features follow LeRobot's conventions: one float per named joint-space quantity
("ee.x", ..., "gripper.gap", ...), each camera an (h, w, 3) image; actions are the end-effector
velocity command ("delta_x", "delta_y", "delta_z", as LeRobot's gamepad names them) plus the
gripper set-point ("gripper"), all in [-1, 1].

A physical robot has no "reset to seed" and no success signal; this one has both, as optional
extras the fleet's driver uses where a robot offers them (`reset_episode`, `episode_status`).
The expert teleoperators read the arm's privileged simulator state (they find the arm by id).
"fleet_expert" reports LeRobot teleop events, as a gamepad does: it asks for an intervention
during a configurable window of steps, so takeovers can be tested through LeRobot's event path
without hardware. "fleet_leader" has no events, as a leader arm has none: the dashboard starts
and ends its takeovers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from fleet_lerobot.shim import Robot, RobotConfig, TeleopEvents, Teleoperator, TeleoperatorConfig

STATE_NAMES = ("ee.x", "ee.y", "ee.z", "gripper.gap", "ee.vx", "ee.vy", "ee.vz")
ACTION_NAMES = ("delta_x", "delta_y", "delta_z", "gripper")

_ARMS: dict[str, "FleetSimArm"] = {}  # connected arms by id, for the expert teleoperator


@RobotConfig.register_subclass("fleet_sim_arm")
@dataclass
class FleetSimArmConfig(RobotConfig):
    task: str = "reach"
    variant: str = "sim"           # "sim" or "real-proxy"
    image_size: int = 96
    max_steps: int | None = None   # the task's default when None
    seed: int = 0                  # layout of the first episode; reset_episode picks later ones
    max_delta: float = 1.0         # largest |delta| sent (a safety clip, like a real arm's max_relative_target)


class FleetSimArm(Robot):
    config_class = FleetSimArmConfig
    name = "fleet_sim_arm"

    def __init__(self, config: FleetSimArmConfig):
        super().__init__(config)
        self.config = config
        self.env = None
        self.last_reward = 0.0
        self.terminated = self.truncated = False
        self.success = False

    @cached_property
    def _cameras(self) -> tuple[str, ...]:
        import sim

        return tuple(sim.TASKS[self.config.task].camera_names)

    @property
    def observation_features(self) -> dict:
        size = self.config.image_size
        return {**{name: float for name in STATE_NAMES}, **{cam: (size, size, 3) for cam in self._cameras}}

    @property
    def action_features(self) -> dict:
        return {name: float for name in ACTION_NAMES}

    @property
    def is_connected(self) -> bool:
        return self.env is not None

    @property
    def is_calibrated(self) -> bool:
        return True

    def connect(self, calibrate: bool = True) -> None:
        import sim

        if self.env is not None:
            raise ConnectionError(f"{self} is already connected")
        self.env = sim.make(self.config.task, image_size=self.config.image_size, max_steps=self.config.max_steps,
                            variant=self.config.variant)
        self.reset_episode(self.config.seed)
        _ARMS[self.id or ""] = self

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def reset_episode(self, seed: int | None, task: str | None = None) -> None:
        """Fleet extra: a new episode from `seed` (a physical arm has a person reset the scene)."""
        if task not in (None, self.config.task):
            raise ValueError(f"this arm runs task {self.config.task!r}, not {task!r}")
        self._observation, _ = self.env.reset(seed=seed)
        self.last_reward, self.terminated, self.truncated, self.success = 0.0, False, False, False

    def episode_status(self) -> tuple[float, bool, bool, bool]:
        """Fleet extra: (reward of the last step, terminated, truncated (time limit), success)."""
        return self.last_reward, self.terminated, self.truncated, self.success

    def get_observation(self) -> dict:
        self._require()
        obs = self._observation
        return {**{name: float(v) for name, v in zip(STATE_NAMES, obs["state"])},
                **{cam: obs["images"][cam] for cam in self._cameras}}

    def send_action(self, action: dict) -> dict:
        """Steps the simulation; returns the action actually sent (clipped to [-1, 1], the deltas to
        +-max_delta)."""
        self._require()
        missing = [name for name in ACTION_NAMES if name not in action]
        if missing:
            raise ValueError(f"action lacks {missing}; this arm takes {list(ACTION_NAMES)}")
        sent = np.clip(np.array([float(action[name]) for name in ACTION_NAMES], np.float32), -1.0, 1.0)
        sent[:3] = np.clip(sent[:3], -self.config.max_delta, self.config.max_delta)
        self._observation, reward, terminated, truncated, info = self.env.step(sent)
        self.last_reward, self.terminated, self.truncated = float(reward), bool(terminated), bool(truncated)
        self.success = bool(info.get("is_success", False))
        return {name: float(v) for name, v in zip(ACTION_NAMES, sent)}

    def disconnect(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None
            _ARMS.pop(self.id or "", None)

    def _require(self) -> None:
        if self.env is None:
            raise ConnectionError(f"{self} is not connected")


@TeleoperatorConfig.register_subclass("fleet_expert")
@dataclass
class FleetExpertConfig(TeleoperatorConfig):
    arm_id: str = ""               # the FleetSimArm it drives (its config id)
    intervene_from: int = -1       # ask for an intervention from this step of each episode (-1: never)
    intervene_steps: int = 10      # for this many steps


class _ScriptedTeleop(Teleoperator):
    """The task's scripted expert as a teleoperator of a connected FleetSimArm."""

    def __init__(self, config):
        super().__init__(config)
        self.config = config
        self._connected = False
        self._expert = None

    @property
    def action_features(self) -> dict:
        return {name: float for name in ACTION_NAMES}

    @property
    def feedback_features(self) -> dict:
        return {}

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def is_calibrated(self) -> bool:
        return True

    def connect(self, calibrate: bool = True) -> None:
        self._connected = True  # the arm may connect after its teleoperator (lerobot-teleoperate does so)

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    @property
    def _arm(self) -> FleetSimArm:
        arm = _ARMS.get(self.config.arm_id)
        if arm is None:
            raise ConnectionError(f"no connected fleet_sim_arm with id {self.config.arm_id!r} to drive")
        return arm

    def get_action(self) -> dict:
        import sim

        env = self._arm.env
        if self._expert is None or self._expert_env is not env:
            self._expert, self._expert_env = sim.make_expert(env), env
        action = np.asarray(self._expert.act(env), np.float32)
        return {name: float(v) for name, v in zip(ACTION_NAMES, action)}

    def send_feedback(self, feedback: dict) -> None:
        pass

    def disconnect(self) -> None:
        self._connected = False


class FleetExpert(_ScriptedTeleop):
    """The scripted expert with a gamepad's events: it asks for an intervention itself."""

    config_class = FleetExpertConfig
    name = "fleet_expert"

    def get_teleop_events(self) -> dict:
        step = self._arm.env.step_count
        start = self.config.intervene_from
        active = start >= 0 and start <= step < start + self.config.intervene_steps
        return {TeleopEvents.IS_INTERVENTION: active, TeleopEvents.TERMINATE_EPISODE: False,
                TeleopEvents.SUCCESS: False, TeleopEvents.RERECORD_EPISODE: False}


@TeleoperatorConfig.register_subclass("fleet_leader")
@dataclass
class FleetLeaderConfig(TeleoperatorConfig):
    arm_id: str = ""


class FleetLeader(_ScriptedTeleop):
    """The scripted expert as a leader arm: it drives, but has no buttons (no teleop events), so
    takeovers start and end at the dashboard, as with an SO-101 leader."""

    config_class = FleetLeaderConfig
    name = "fleet_leader"

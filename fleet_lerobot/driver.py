"""Any LeRobot Robot behind the fleet's Driver interface, and any LeRobot Teleoperator as the
takeover source.

Observation: every float feature of `robot.observation_features`, in its declared order, is the
state vector; every (h, w, 3) feature is a camera. Action: the policy's vector maps, in order, onto
`robot.action_features`; the step records what `send_action` reports as actually sent (a robot
may clip a goal it deems unsafe), not what was asked for.

Episodes: a robot that offers `reset_episode(seed, task)` and `episode_status()` (the fleet's sim
arm does) resets and reports success itself; a physical one is reset by a person, and its
episodes end at `max_steps` or on the teleoperator's "terminate"/"success" events.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from fleet_lerobot import shim
from robot_client.driver import DriverBase, Observation
from robot_client.teleop import TeleopBase

log = logging.getLogger("fleetlearn.lerobot")


class LeRobotDriver(DriverBase):
    def __init__(self, robot, tasks: dict[str, str], control_hz: float = 10.0, max_steps: int = 200):
        self.robot = robot
        features = robot.observation_features
        self.state_keys = [k for k, v in features.items() if v is float]
        self.cameras = {k: tuple(int(x) for x in v) for k, v in features.items() if isinstance(v, tuple) and len(v) == 3}
        if not self.cameras:
            raise ValueError(f"LeRobot robot {robot.name!r} has no camera; the fleet's policy needs at least one "
                             "(set its cameras, e.g. --driver.cameras '{\"front\": {\"type\": \"opencv\", ...}}')")
        other = [k for k in features if k not in self.state_keys and k not in self.cameras]
        if other:
            raise ValueError(f"LeRobot robot {robot.name!r}: observation features {other} are neither floats nor "
                             "(h, w, 3) images; the fleet's observation has no place for them")
        self.action_keys = [k for k, v in robot.action_features.items()]
        if any(robot.action_features[k] is not float for k in self.action_keys):
            raise ValueError(f"LeRobot robot {robot.name!r}: every action feature must be a float")
        self.robot_type = f"lerobot/{robot.name}"
        self.state_dim, self.action_dim = len(self.state_keys), len(self.action_keys)
        self.control_hz = float(control_hz)
        self.tasks = dict(tasks)
        self.max_steps = int(max_steps)
        self.task = next(iter(self.tasks))
        # A remote operator jogs the end effector where the robot takes velocity commands.
        self.jog_dims = (0, 1, 2) if self.action_keys[:3] == ["delta_x", "delta_y", "delta_z"] else None
        self.episodes = 0
        self.last_action: np.ndarray | None = None
        self.last_sent: np.ndarray | None = None  # what the robot reported it executed, last step
        self._bus = threading.Lock()  # the watchdog's hold() comes from its own thread
        self._raw: dict | None = None
        self.teleop = None  # a LeRobotTeleop may end episodes through its events
        self._steps = 0
        if not robot.is_connected:
            robot.connect()
        log.info("LeRobot %s connected: state %s, cameras %s, action %s", robot.name, self.state_keys,
                 dict(self.cameras), self.action_keys)

    def _observation(self) -> Observation:
        with self._bus:  # one transaction on the motor bus at a time (the watchdog's hold() too)
            raw = self.robot.get_observation()
        self._raw = raw
        missing = [k for k in (*self.state_keys, *self.cameras) if k not in raw]
        if missing:
            raise ValueError(f"LeRobot {self.robot.name} observation lacks {missing}")
        images = {}
        for cam, shape in self.cameras.items():
            image = np.asarray(raw[cam])
            if image.shape != shape or image.dtype != np.uint8:
                raise ValueError(f"camera {cam!r} gave {image.dtype} {image.shape}, declared uint8 {shape}")
            images[cam] = image
        return Observation(images=images, state=np.array([raw[k] for k in self.state_keys], np.float32))

    def reset(self, task: str, seed: int | None) -> Observation:
        if task not in self.tasks:
            raise ValueError(f"unknown task {task!r}; this robot runs {sorted(self.tasks)}")
        self.task = task
        reset = getattr(self.robot, "reset_episode", None)
        if reset is not None:
            reset(seed, task)
        self.episodes += 1
        self._steps = 0
        self.last_action = self.last_sent = None
        return self._observation()

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, np.float32)
        if action.shape != (self.action_dim,):
            raise ValueError(f"action of shape {action.shape}, expected ({self.action_dim},)")
        with self._bus:
            sent = self.robot.send_action({k: float(v) for k, v in zip(self.action_keys, action)})
        self.last_action = action
        self.last_sent = np.array([float(sent.get(k, v)) for k, v in zip(self.action_keys, action)], np.float32)
        self._steps += 1
        status = getattr(self.robot, "episode_status", None)
        reward, terminated, truncated, success = status() if status is not None else (0.0, False, False, False)
        ended = self.teleop.take_end_events() if self.teleop is not None else set()
        if "success" in ended:
            terminated, success = True, True
        elif "terminate_episode" in ended:
            terminated = True
        truncated = not terminated and (truncated or self._steps >= self.max_steps)
        return self._observation(), float(reward), bool(terminated), truncated, {"is_success": bool(success)}

    def hold_action(self) -> np.ndarray | None:
        """The action that keeps the arm where it is: the last target sent, or else the joint
        positions last observed (for action keys the observation also has)."""
        if self.last_sent is not None:
            return self.last_sent
        raw = self._raw or {}
        if all(k in raw for k in self.action_keys):
            return np.array([float(raw[k]) for k in self.action_keys], np.float32)
        return None

    def hold(self) -> None:
        """The control loop stalled (robot_client/safety.py's watchdog): the last executed target
        again, which a position-controlled arm holds. Skipped while the loop is itself on the bus
        (it is not stalled then, and the bus takes one transaction at a time)."""
        target = self.hold_action()
        if target is not None and self._bus.acquire(blocking=False):
            try:
                self.robot.send_action({k: float(v) for k, v in zip(self.action_keys, target)})
            finally:
                self._bus.release()

    def close(self) -> None:
        if self.robot.is_connected:
            self.robot.disconnect()


def feature_names(features: dict) -> list[str]:
    """Action names of a LeRobot feature dict: {"name": float, ...}, or the end-effector teleops'
    {"dtype": ..., "shape": ..., "names": {"delta_x": 0, ...}} (gamepad, keyboard_ee in 0.4.x)."""
    if "names" in features and "dtype" in features:
        names = features["names"]
        return list(names) if isinstance(names, (dict, list, tuple)) else []
    return list(features)


class LeRobotTeleop(TeleopBase):
    """A LeRobot Teleoperator (leader arm, gamepad, keyboard, the fleet's expert) as the fleet's
    takeover source. Where the teleoperator reports events, it starts a takeover itself
    ("is_intervention" turns on), hands back when it turns off, and can end the episode
    ("success", "terminate_episode"); without events (leader arms), the dashboard starts and
    ends takeovers and the teleoperator only drives."""

    can_drive = True

    def __init__(self, teleop, driver: LeRobotDriver, operator_id: str = "teleop"):
        self.teleop = teleop
        self.driver = driver
        self.operator_id = operator_id
        names = feature_names(teleop.action_features)
        missing = [k for k in driver.action_keys if k not in names]
        if missing:
            raise ValueError(f"teleoperator {teleop.name!r} gives {names}, the robot needs {driver.action_keys} "
                             f"(missing {missing})")
        if not teleop.is_connected:
            teleop.connect()
        self.has_events = hasattr(teleop, "get_teleop_events")
        self.events: dict[str, bool] = {}
        self._ended: set[str] = set()  # success / terminate presses, kept until a step uses them
        self._began_here = False
        driver.teleop = self

    def poll(self) -> None:
        """Reads the teleoperator's events once per control tick (the loop calls it)."""
        self.events = shim.teleop_events(self.teleop) or {}
        self._ended |= {k for k in ("success", "terminate_episode") if self.events.get(k)}

    def take_end_events(self) -> set[str]:
        """The end-of-episode presses since the last step (a gamepad reports a press once)."""
        ended, self._ended = self._ended, set()
        return ended

    def wants_take_over(self) -> bool:
        return self.has_events and self.events.get("is_intervention", False)

    def begin(self, operator_id: str) -> None:
        self._began_here = self.wants_take_over()

    def action(self, observation: Observation) -> np.ndarray:
        act = self.teleop.get_action()
        return np.array([float(act[k]) for k in self.driver.action_keys], np.float32)

    def wants_hand_back(self) -> bool:
        # A takeover its own events started ends when they say so (read now, after the step: has
        # the person let go?); one the dashboard started ends from the dashboard.
        if not self._began_here:
            return False
        self.poll()
        return not self.events.get("is_intervention", False)

    def expert_action(self) -> np.ndarray:
        return self.action(None)

    def close(self) -> None:
        if self.teleop.is_connected:
            self.teleop.disconnect()

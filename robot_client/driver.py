"""Drivers: the one interface between the control loop and an arm (simulated or physical)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass
class Observation:
    images: dict[str, np.ndarray]  # camera name -> HxWx3 uint8
    state: np.ndarray              # proprioception, float32


class Driver(Protocol):
    robot_type: str
    cameras: dict[str, tuple[int, int, int]]
    state_dim: int
    action_dim: int
    control_hz: float
    tasks: dict[str, str]          # task name -> instruction
    max_steps: int

    def reset(self, task: str, seed: int | None) -> Observation: ...

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        """Sends an action; returns (observation, reward, terminated, truncated, info)."""

    def close(self) -> None: ...


class SimDriver:
    """A MuJoCo task from `sim` behind the Driver interface."""

    robot_type = "sim_cartesian_arm"

    def __init__(self, task: str, image_size: int = 96, max_steps: int | None = None):
        import sim  # imported here so a physical robot never needs MuJoCo

        self._sim = sim
        self._image_size = image_size
        self._max_steps = max_steps
        self.env = sim.make(task, image_size=image_size, max_steps=max_steps)
        self.task = task
        self.cameras = {name: tuple(self.env.image_shape) for name in self.env.camera_names}
        self.state_dim = self.env.state_dim
        self.action_dim = self.env.action_dim
        self.control_hz = float(self.env.control_hz)
        self.max_steps = self.env.max_steps
        self.tasks = {task: self.env.instruction}

    def _observation(self, obs: dict) -> Observation:
        return Observation(images=dict(obs["images"]), state=obs["state"])

    def reset(self, task: str, seed: int | None) -> Observation:
        if task != self.task:
            self.env.close()
            self.env = self._sim.make(task, image_size=self._image_size, max_steps=self._max_steps)
            self.task = task
            self.tasks = {task: self.env.instruction}
            self.max_steps = self.env.max_steps
        obs, _ = self.env.reset(seed=seed)
        return self._observation(obs)

    def step(self, action: np.ndarray):
        obs, reward, terminated, truncated, info = self.env.step(np.asarray(action, np.float32))
        return self._observation(obs), float(reward), bool(terminated), bool(truncated), info

    def close(self) -> None:
        self.env.close()


DRIVERS = {"sim": SimDriver}

"""Handles on task objects: place them per episode and read their pose.

`FreeBody` is a body on a free joint (a cube or block the arm moves); `Marker` is a mocap body
(a visual-only target, zone or ball that a task moves per episode without rebuilding the model).
Tasks keep their own named accessors (`cube_position()`, `place_target()`, ...) and delegate here.
"""

from __future__ import annotations

import mujoco
import numpy as np

from sim.tabletop_env import yaw_quaternion


class FreeBody:
    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, joint_name: str, half_height: float):
        joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint_name)
        if joint < 0:
            raise KeyError(f"no joint named {joint_name!r} in the model")
        self._model, self._data = model, data
        self._qpos = int(model.jnt_qposadr[joint])
        self._qvel = int(model.jnt_dofadr[joint])
        self.half_height = half_height

    def place(self, xy, yaw: float = 0.0, height: float = 0.0) -> None:
        """Put the body at rest at `xy` (metres), turned by `yaw`, its bottom `height` above the table."""
        self._data.qpos[self._qpos : self._qpos + 3] = [*xy, self.half_height + height]
        self._data.qpos[self._qpos + 3 : self._qpos + 7] = yaw_quaternion(yaw)
        self._data.qvel[self._qvel : self._qvel + 6] = 0.0
        mujoco.mj_forward(self._model, self._data)

    def position(self) -> np.ndarray:
        return self._data.qpos[self._qpos : self._qpos + 3].copy()

    def quaternion(self) -> np.ndarray:
        """Orientation as a unit quaternion (w, x, y, z)."""
        return self._data.qpos[self._qpos + 3 : self._qpos + 7].copy()


class Marker:
    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, body_name: str):
        body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, body_name)
        if body < 0 or model.body_mocapid[body] < 0:
            raise KeyError(f"no mocap body named {body_name!r} in the model")
        self._model, self._data = model, data
        self._mocap = int(model.body_mocapid[body])

    def place(self, xyz) -> None:
        self._data.mocap_pos[self._mocap] = xyz
        mujoco.mj_forward(self._model, self._data)

    def position(self) -> np.ndarray:
        return self._data.mocap_pos[self._mocap].copy()

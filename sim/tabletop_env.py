"""Gymnasium env base class shared by all tabletop tasks with the Cartesian arm.

It owns everything that is not task specific: building the model, the
action -> actuator-target mapping, physics substepping at the control rate,
camera rendering, the proprioceptive state and the episode bookkeeping.
A task subclass provides its objects' MJCF, how to randomise them on reset,
and its success test (see `sim/__init__.py` for the recipe).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from sim import variants
from sim.arm import WRIST_CAMERA_NAME, CartesianArm
from sim.rendering import ThreadRenderer
from sim.scene import FRONT_CAMERA_NAME, build_tabletop_xml

CONTROL_HZ = 10
DEFAULT_IMAGE_SIZE = 96

# One action unit moves the end-effector target this far (metres) in one
# control step; i.e. top speed is 0.3 m/s.
MAX_EE_STEP = 0.03

# The actuator target moves to its new value along a ramp of this many
# segments per control step, so the end effector travels at a steady speed
# instead of jumping and stopping (which would kick objects it pushes).
TARGET_RAMP_SEGMENTS = 10

# A new target is built on the previous one (so steady actions give steady
# motion), but never more than this far (per axis) ahead of the actual end
# effector, so an arm blocked by an object does not wind up a large force.
MAX_TARGET_LEAD = 0.015

# Jitter (metres, uniform +-) applied to the home pose on reset.
HOME_JITTER = 0.01

# Proprioceptive state layout: ee xyz, finger gap, ee velocity xyz.
STATE_DIM = 7

SUPPORTED_VARIANTS = variants.VARIANTS


class TabletopArmEnv(gym.Env):
    """Base env: observation {"images": {"front", "wrist"}, "state"}, action (dx, dy, dz, gripper)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    # Set by every task subclass.
    task_name: str = ""
    instruction: str = ""
    default_max_steps: int = 80

    camera_names: tuple[str, str] = (FRONT_CAMERA_NAME, WRIST_CAMERA_NAME)
    control_hz: int = CONTROL_HZ
    action_dim: int = 4
    max_ee_step: float = MAX_EE_STEP
    state_dim: int = STATE_DIM

    def __init__(
        self,
        image_size: int | tuple[int, int] = DEFAULT_IMAGE_SIZE,
        max_steps: int | None = None,
        variant: str = "sim",
        shift: float | None = None,
        render_mode: str | None = None,
    ):
        """`variant` "sim" or "real-proxy"; `shift` sizes the real-proxy gap (sim/variants.py)."""
        super().__init__()
        self.shift = variants.resolve(variant, shift)
        self.variant = variant
        self.render_mode = render_mode
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        height, width = (int(v) for v in image_size)
        self.image_shape = (height, width, 3)
        self.max_steps = int(max_steps if max_steps is not None else self.default_max_steps)

        self.arm = CartesianArm(**self._arm_overrides())
        xml = build_tabletop_xml(
            self.arm, self.task_name, self._objects_xml(), image_height=height, image_width=width
        )
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        control_period = 1.0 / self.control_hz
        self.substeps = int(round(control_period / self.model.opt.timestep))
        self._slide_ctrl = [self._actuator_id(name) for name in self.arm.slide_actuators]
        self._effects = variants.apply_to_model(self.model, self.shift, set(self.arm.body_names), self._slide_ctrl,
                                                FRONT_CAMERA_NAME, self.arm.wrist_camera)
        self._pending_actions: deque[np.ndarray] = deque()
        self._noise_rng = np.random.default_rng(0)
        # Bound to this thread: render here; close() anywhere (sim/rendering.py says why).
        self._renderer = ThreadRenderer(self.model, height=height, width=width)

        self._slide_qpos = [self._joint_qpos_address(name) for name in self.arm.slide_joints]
        self._slide_qvel = [self._joint_qvel_address(name) for name in self.arm.slide_joints]
        self._finger_qpos = [self._joint_qpos_address(name) for name in self.arm.finger_joints]
        self._gripper_ctrl = self._actuator_id(self.arm.gripper_actuator)

        image_space = spaces.Box(0, 255, shape=self.image_shape, dtype=np.uint8)
        self.observation_space = spaces.Dict(
            {
                "images": spaces.Dict({name: image_space for name in self.camera_names}),
                "state": spaces.Box(-np.inf, np.inf, shape=(self.state_dim,), dtype=np.float32),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, shape=(self.action_dim,), dtype=np.float32)
        self._step_count = 0
        self._ee_target = np.asarray(self.arm.home, dtype=np.float64)
        # Substep counts at which each ramp segment ends (handles any split).
        self._ramp_ends = np.linspace(0, self.substeps, TARGET_RAMP_SEGMENTS + 1).round().astype(int)[1:]

    # ---- hooks for task subclasses -----------------------------------------

    def _arm_overrides(self) -> dict[str, Any]:
        """Keyword overrides for `CartesianArm` (workspace, home)."""
        return {}

    def _objects_xml(self) -> str:
        raise NotImplementedError

    def _randomise_objects(self) -> None:
        """Place task objects in self.data using self.np_random."""
        raise NotImplementedError

    def _is_success(self) -> bool:
        raise NotImplementedError

    def _task_info(self) -> dict[str, Any]:
        return {}

    def _update_visuals(self) -> None:
        """Called before every observation is rendered: change what the cameras show (a cue lamp)."""

    def task_distance(self) -> float | None:
        """Metres still to go to the goal (the robot's help rule watches it for progress); a task
        without such a measure returns None and the help rule's no-progress test stays off."""
        return None

    def expert(self, noise: float = 0.0, seed: int | None = None):
        """Scripted expert for this task (see sim/experts.py)."""
        raise NotImplementedError

    # ---- gymnasium API -------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        home = np.asarray(self.arm.home) + self.np_random.uniform(-HOME_JITTER, HOME_JITTER, size=3)
        home = np.clip(home, self.arm.low, self.arm.high)
        self.data.qpos[self._slide_qpos] = home
        self.data.ctrl[self._slide_ctrl] = home
        self._ee_target = home.copy()
        # Start with the gripper closed: the pusher pose for push tasks.
        self.data.ctrl[self._gripper_ctrl] = self.arm.finger_travel_target(1.0)
        self._randomise_objects()
        mujoco.mj_forward(self.model, self.data)
        self._step_count = 0
        if self._effects.any_noise:  # drawn after the layout, so sim and real-proxy share layouts
            self._noise_rng = np.random.default_rng(int(self.np_random.integers(2**63)))
        # Actions in flight when the episode starts: hold still with the gripper closed.
        hold = np.array([0.0, 0.0, 0.0, 1.0])
        self._pending_actions = deque(hold.copy() for _ in range(self._effects.latency_steps))
        return self._observation(), self._info(success=self._is_success())

    def step(self, action):
        action = self._executed_action(np.asarray(action, dtype=np.float64).reshape(self.action_dim))
        ee = self.ee_position()
        ramp_start = ee + np.clip(self._ee_target - ee, -MAX_TARGET_LEAD, MAX_TARGET_LEAD)
        travel = self.max_ee_step * self._effects.action_gain * action[:3]
        new_target = np.clip(ramp_start + travel, self.arm.low, self.arm.high)
        self.data.ctrl[self._gripper_ctrl] = self.arm.finger_travel_target(action[3])
        done_substeps = 0
        for segment, segment_end in enumerate(self._ramp_ends, start=1):
            fraction = segment / len(self._ramp_ends)
            self.data.ctrl[self._slide_ctrl] = ramp_start + fraction * (new_target - ramp_start)
            mujoco.mj_step(self.model, self.data, nstep=int(segment_end - done_substeps))
            done_substeps = int(segment_end)
        self._ee_target = new_target
        self._step_count += 1

        success = self._is_success()
        reward = 1.0 if success else 0.0
        terminated = success
        truncated = (not terminated) and self._step_count >= self.max_steps
        return self._observation(), reward, terminated, truncated, self._info(success)

    @property
    def allows_rl_rollouts(self) -> bool:
        """False on real-proxy: like a physical robot it serves demonstrations and evaluation only."""
        return self.variant == "sim"

    def render(self):
        return self._render_camera(self.camera_names[0])

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ---- privileged state (used by experts, tests and debugging) -------------

    def ee_position(self) -> np.ndarray:
        return self.data.qpos[self._slide_qpos].copy()

    def ee_velocity(self) -> np.ndarray:
        return self.data.qvel[self._slide_qvel].copy()

    def finger_gap(self) -> float:
        """Distance between the finger pads (metres); 0 when closed."""
        return float(np.sum(self.data.qpos[self._finger_qpos]))

    @property
    def step_count(self) -> int:
        return self._step_count

    # ---- internals -------------------------------------------------------------

    def _executed_action(self, action: np.ndarray) -> np.ndarray:
        """The action the arm carries out this step: clipped, and on real-proxy late and noisy."""
        action = np.clip(action, -1.0, 1.0)
        if self._effects.latency_steps:
            self._pending_actions.append(action)
            action = self._pending_actions.popleft()
        if self._effects.action_noise:
            action = np.clip(action + self._noise_rng.normal(0.0, self._effects.action_noise, action.shape), -1.0, 1.0)
        return action

    def _observation(self) -> dict:
        self._update_visuals()
        images = {name: self._render_camera(name) for name in self.camera_names}
        state = self._proprioception()
        effects = self._effects
        if effects.pixel_noise:
            for name, image in images.items():
                noisy = image + self._noise_rng.normal(0.0, effects.pixel_noise, image.shape).astype(np.float32)
                images[name] = np.clip(noisy, 0, 255).astype(np.uint8)
        if effects.state_noise:
            state = state + self._noise_rng.normal(0.0, effects.state_noise, state.shape).astype(np.float32)
        return {"images": images, "state": state}

    def _proprioception(self) -> np.ndarray:
        state = np.concatenate([self.ee_position(), [self.finger_gap()], self.ee_velocity()])
        return state.astype(np.float32)

    def _render_camera(self, camera_name: str) -> np.ndarray:
        if self._renderer is None:
            raise RuntimeError("env is closed")
        self._renderer.update_scene(self.data, camera=camera_name)
        return self._renderer.render()

    def _info(self, success: bool) -> dict[str, Any]:
        return {"is_success": bool(success), **self._task_info()}

    def _joint_qpos_address(self, name: str) -> int:
        return int(self.model.jnt_qposadr[self._joint_id(name)])

    def _joint_qvel_address(self, name: str) -> int:
        return int(self.model.jnt_dofadr[self._joint_id(name)])

    def _joint_id(self, name: str) -> int:
        return self._element_id(mujoco.mjtObj.mjOBJ_JOINT, name)

    def _actuator_id(self, name: str) -> int:
        return self._element_id(mujoco.mjtObj.mjOBJ_ACTUATOR, name)

    def _body_id(self, name: str) -> int:
        return self._element_id(mujoco.mjtObj.mjOBJ_BODY, name)

    def _element_id(self, kind: mujoco.mjtObj, name: str) -> int:
        element_id = mujoco.mj_name2id(self.model, kind, name)
        if element_id < 0:
            raise KeyError(f"no {kind.name} named {name!r} in the model")
        return element_id


def yaw_quaternion(yaw: float) -> np.ndarray:
    """Unit quaternion (w, x, y, z) for a rotation of `yaw` radians about world z."""
    return np.array([math.cos(yaw / 2.0), 0.0, 0.0, math.sin(yaw / 2.0)])

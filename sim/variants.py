"""Task variants: "sim" (the nominal world) and "real-proxy" (a stand-in for the physical one).

A policy trained in simulation meets a different world on a real robot: surfaces grip more,
objects weigh more, the arm is softer and answers late, the camera was mounted a little off,
the room is lit differently and every sensor is noisy. The real-proxy variant applies exactly
those differences to any tabletop task, so sim-to-real methods (RL-Co) have a gap to close and
a number to show for it.

Every difference scales linearly with one number, `shift` (0 = identical to "sim"). The
default, `DEFAULT_SHIFT`, is frozen: it was chosen so that a policy trained only on sim
demonstrations loses at least 20 points of success on real-proxy (`fleet bench sim` measures
it; docs/BENCHMARKS.md keeps the figure). Benchmarks compare across runs only at this default.

The real-proxy world is one fixed world, like a lab: its offsets (colours, camera mount,
friction) do not change between episodes; only the noise is random. Like a real robot, it may
be used for demonstrations, fleet episodes and evaluation, never for RL rollouts:
`allows_rl_rollouts` is False on it and `sim.make_rl_env` refuses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mujoco
import numpy as np

VARIANTS = ("sim", "real-proxy")

# Frozen default size of the real-proxy shift (see the module docstring).
DEFAULT_SHIFT = 1.0

# The fixed "lab" offsets (per-geom colour error) come from this seed, not the episode's.
WORLD_SEED = 20261126


@dataclass(frozen=True)
class RealityGap:
    """The differences at shift = 1; each scales linearly with the shift.

    Dynamics
        friction          sliding friction of the table and task objects x (1 + friction)
        object_mass       mass and inertia of every task object x (1 + object_mass)
        arm_stiffness     position gain of the arm's slide actuators x (1 + arm_stiffness)
        action_gain       end-effector travel per action unit x (1 + action_gain); the nominal
                          `max_ee_step` that experts and policies assume does not change
        latency_steps     actions reach the arm this many control steps late (rounded)
        action_noise      Gaussian noise (std, action units) on every action the arm executes
    Visuals
        light             scale of every light's diffuse term and the headlight (1 + light)
        tint              every geom colour is pulled this far towards `tint_rgb`
        colour_jitter     plus a fixed per-geom colour error (std, 0..1 units)
        camera_offset_m   front camera moved by this vector (metres)
        camera_tilt_deg   and turned by these angles about its own x (pitch) and y (yaw) axes
        wrist_offset_m    wrist camera mounted this far off (metres, each axis)
        wrist_tilt_deg    and pitched by this angle
    Sensors
        pixel_noise       Gaussian noise on every pixel (std, 0..255 levels)
        state_noise       Gaussian noise on proprioception (std, metres or m/s)
    """

    friction: float = 0.5
    object_mass: float = 0.5
    arm_stiffness: float = -0.3
    action_gain: float = -0.2
    latency_steps: float = 1.0
    action_noise: float = 0.05
    light: float = -0.4
    tint: float = 0.35
    tint_rgb: tuple[float, float, float] = (0.85, 0.65, 0.35)
    colour_jitter: float = 0.08
    camera_offset_m: tuple[float, float, float] = (0.07, 0.05, -0.05)
    camera_tilt_deg: tuple[float, float] = (7.0, 5.0)
    wrist_offset_m: float = 0.012
    wrist_tilt_deg: float = 6.0
    pixel_noise: float = 8.0
    state_noise: float = 0.002


@dataclass(frozen=True)
class StepEffects:
    """What the env applies on every step (the model-level offsets are applied once)."""

    latency_steps: int = 0
    action_noise: float = 0.0
    action_gain: float = 1.0
    pixel_noise: float = 0.0
    state_noise: float = 0.0

    @property
    def any_noise(self) -> bool:
        return self.action_noise > 0 or self.pixel_noise > 0 or self.state_noise > 0


def resolve(variant: str, shift: float | None) -> float:
    """The shift size a variant runs at (0 for "sim")."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; supported: {VARIANTS}")
    if variant == "sim":
        if shift not in (None, 0, 0.0):
            raise ValueError("shift applies to the real-proxy variant only")
        return 0.0
    shift = DEFAULT_SHIFT if shift is None else float(shift)
    if not 0.0 <= shift <= 3.0:
        raise ValueError(f"shift must be in [0, 3], got {shift}")
    return shift


def apply_to_model(model: mujoco.MjModel, shift: float, arm_bodies: set[str], slide_actuators: list[int],
                   front_camera: str, wrist_camera: str, gap: RealityGap = RealityGap()) -> StepEffects:
    """Shifts a compiled model in place; returns the per-step effects for the env to apply."""
    if shift == 0.0:
        return StepEffects()
    s = shift
    for body in range(1, model.nbody):
        if mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, body) not in arm_bodies:
            model.body_mass[body] *= 1.0 + gap.object_mass * s
            model.body_inertia[body] *= 1.0 + gap.object_mass * s
            model.geom_friction[model.geom_bodyid == body, 0] *= 1.0 + gap.friction * s
    world_geoms = model.geom_bodyid == 0  # table and rim
    model.geom_friction[world_geoms, 0] *= 1.0 + gap.friction * s
    # Masses feed derived constants (inverse weights that set contact softness): recompute them,
    # or heavier objects get contacts tuned for the lighter ones and the simulation blows up.
    mujoco.mj_setConst(model, mujoco.MjData(model))
    for actuator in slide_actuators:  # position actuator: force = kp * (ctrl - q)
        model.actuator_gainprm[actuator, 0] *= 1.0 + gap.arm_stiffness * s
        model.actuator_biasprm[actuator, 1] *= 1.0 + gap.arm_stiffness * s

    light = max(0.0, 1.0 + gap.light * s)
    model.light_diffuse[:] *= light
    model.vis.headlight.ambient[:] = np.asarray(model.vis.headlight.ambient) * light
    model.vis.headlight.diffuse[:] = np.asarray(model.vis.headlight.diffuse) * light
    tint = min(1.0, gap.tint * s)
    jitter = np.random.default_rng(WORLD_SEED).normal(0.0, gap.colour_jitter * s, size=(model.ngeom, 3))
    rgb = model.geom_rgba[:, :3]
    model.geom_rgba[:, :3] = np.clip((1.0 - tint) * rgb + tint * np.asarray(gap.tint_rgb) + jitter, 0.0, 1.0)

    front = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, front_camera)
    model.cam_pos[front] += s * np.asarray(gap.camera_offset_m)
    pitch, yaw = (math.radians(a * s) for a in gap.camera_tilt_deg)
    model.cam_quat[front] = _quat_multiply(model.cam_quat[front],
                                           _quat_multiply(_axis_angle((1, 0, 0), pitch), _axis_angle((0, 1, 0), yaw)))
    wrist = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, wrist_camera)
    model.cam_pos[wrist] += s * gap.wrist_offset_m
    model.cam_quat[wrist] = _quat_multiply(model.cam_quat[wrist], _axis_angle((1, 0, 0), math.radians(gap.wrist_tilt_deg * s)))

    return StepEffects(latency_steps=int(round(gap.latency_steps * s)), action_noise=gap.action_noise * s,
                       action_gain=1.0 + gap.action_gain * s, pixel_noise=gap.pixel_noise * s,
                       state_noise=gap.state_noise * s)


def _axis_angle(axis, angle: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    return np.array([math.cos(angle / 2), *(math.sin(angle / 2) * axis / np.linalg.norm(axis))])


def _quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (w, x, y, z) quaternions: rotation b applied in a's frame."""
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
                     w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                     w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])

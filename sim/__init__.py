"""fleetlearn simulation: tabletop tasks for a Cartesian (gantry) arm in MuJoCo.

Quick start::

    import sim
    env = sim.make("push_cube")            # image_size=96, max_steps=None (task default), variant="sim"
    obs, info = env.reset(seed=0)
    expert = sim.make_expert(env)          # noise=0.0, seed=None
    while True:
        obs, reward, terminated, truncated, info = env.step(expert.act(env))
        if terminated or truncated:
            break
    env.close()                            # frees the offscreen renderer

Rendering is headless (MUJOCO_GL=egl, set below unless already set); code
that imports mujoco before sim must set MUJOCO_GL itself.

Robot (sim/arm.py)
    End effector on three world-aligned slide joints (x, y, z) with stiff
    position actuators, plus a two-finger parallel gripper (one actuator,
    fingers mirrored by an equality constraint, 0..9 cm opening).  Table top
    is z = 0; the reachable box is x, y in [-0.25, 0.25] m and grasp-centre
    z in [0.019, 0.25] m (fingertips stop ~4 mm above the table).  A 2 cm
    high rim 2.5 cm outside the reachable box keeps objects within reach.

Action: float32 (4,) in [-1, 1] = (dx, dy, dz, gripper)
    dx, dy, dz scale to an end-effector displacement of up to 3 cm per step,
    added to the position target (kept within 1.5 cm of the actual end
    effector, so a blocked arm does not wind up) and clipped to the
    reachable box; the target ramps to its new value over the step.
    gripper: -1 fully open .. +1 closed (a position target for the fingers).
    Control runs at 10 Hz: one step = 0.1 s of physics (50 x 2 ms).

Observation: dict (the same contract as a bring-your-own environment)
    "images": {"front": uint8 (H, W, 3)  fixed camera above/in front of the table,
               "wrist": uint8 (H, W, 3)  camera on the end effector looking forward-down}
    "state": float32 (7,)     proprioception only: ee xyz (m), finger gap (m),
                              ee velocity xyz (m/s).  Object poses are NOT in
                              the state; a policy must infer them from images.
    H = W = 96 by default (`image_size`: int or (H, W)).

Episode: reward 1.0 on the step the task succeeds (which also terminates),
    else 0.0; truncated at `max_steps`.  info["is_success"] is always set,
    plus task-specific entries.

Tasks (sim.TASKS)
    push_cube  "push the red cube onto the green target" (sim/push_cube.py).
        A 4.5 cm red cube (random yaw) and a green target disc (radius 3.5 cm,
        visual only) are placed at random in [-0.15, 0.15]^2 m, >= 12 cm
        apart; success when the cube centre is within the disc radius.
        info["cube_to_target"] is that distance (m).  max_steps defaults to 80
        (the expert needs ~21 steps on average, at most ~40).

Experts (sim/experts.py)
    `sim.make_expert(env, noise=0.0, seed=None)` (same as `env.expert(...)`)
    returns the task's scripted expert.  `expert.act(env)` reads privileged
    sim state and keeps no memory between calls, so it can take over from
    any state; `noise` adds Gaussian noise (std, in action units).

Env attributes other code relies on: task_name, instruction, camera_names,
image_shape, state_dim, action_dim, control_hz, max_steps.  Privileged
accessors for experts and tests: ee_position(), ee_velocity(), finger_gap(),
and per task e.g. cube_position(), target_position(), place_cube(), place_target().

Adding a task
    1. Subclass `sim.tabletop_env.TabletopArmEnv` in a new module under sim/:
       set `task_name`, `instruction`, `default_max_steps`, and implement
       `_objects_xml()` (MJCF bodies for the task's objects; use contype=0
       conaffinity=0 for markers), `_randomise_objects()` (place them with
       `self.np_random`), `_is_success()`, `_task_info()` and `expert()`.
       Override `_arm_overrides()` to change the arm's workspace or home pose.
    2. Write a stateless expert for it in sim/experts.py.
    3. Add it to `TASKS` in sim/registry.py (or call `sim.register_task`).
"""

import os

# Headless rendering; must be set before mujoco is first imported.
os.environ.setdefault("MUJOCO_GL", "egl")

from sim.experts import PushCubeExpert  # noqa: E402
from sim.push_cube import PushCubeEnv  # noqa: E402
from sim.registry import TASKS, make, make_expert, register_task  # noqa: E402
from sim.tabletop_env import TabletopArmEnv  # noqa: E402

__all__ = [
    "TASKS",
    "make",
    "make_expert",
    "register_task",
    "TabletopArmEnv",
    "PushCubeEnv",
    "PushCubeExpert",
]

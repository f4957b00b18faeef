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
    reach  "move the gripper to the magenta ball" (sim/reach.py).
        A magenta ball (radius 2 cm, on a thin post, visual only) at a random
        point, x, y in [-0.18, 0.18] m and 4-14 cm high; success when the
        grasp centre is within 2.5 cm of its centre.
        info["distance_to_marker"] (m).  max_steps 40 (expert: ~5 steps).
    pick_place  "pick up the yellow block and put it in the blue square"
        (sim/pick_place.py).  A 4.5 cm yellow block (yaw within +-30 degrees,
        so the fingers, which close along y, grasp it squarely) and a 10 cm
        blue square drawn on the table, in [-0.15, 0.15]^2 m, >= 14 cm apart;
        success when the block rests on the table with its centre inside the
        square and no finger touches it (set down and let go).
        info["block_to_zone"] (m), info["block_grasped"].  max_steps 100
        (expert: ~28 steps).
    press_button  "press the orange button" (sim/press_button.py).
        A spring-loaded button (sim/buttons.py: a dark base and a 5 cm
        orange cap that travels 12 mm, both low-poly cylinders) in
        [-0.17, 0.17]^2 m; success when the cap is pushed down 8 mm.  info["button_depression"] (m).  max_steps 50
        (expert: ~12 steps).
    cued_button  "remember which side the lamp lit up and press the button on
        that side" (sim/cued_button.py), a memory task.  Two identical teal
        buttons, one on each half of the table (left = -x = image left), and
        a lamp at the back with a square lens per side.  For the first CUE_STEPS = 10
        steps (1 s) the lens on the cued side is lit and the arm holds its
        home pose (actions are ignored); then both lenses are dark for good.
        Pressing the cued button succeeds; pressing the other one terminates
        the episode as a failure.  The cue (privileged `env.cue`, 0 = left,
        1 = right) is drawn after the layout, so a seed has the same layout
        for both cues; `reset(seed=..., options={"cue": c})` overrides it.
        After the cue phase, the images and state do not depend on the cue.
        info["cue_visible"], info["wrong_button_pressed"].  max_steps 60
        (expert: ~22 steps, 10 of them the cue phase).

Experts (sim/experts/)
    `sim.make_expert(env, noise=0.0, seed=None)` (same as `env.expert(...)`)
    returns the task's scripted expert.  `expert.act(env)` reads privileged
    sim state and keeps no memory between calls, so it can take over from
    any state; `noise` adds Gaussian noise (std, in action units).  The
    experts of reach, pick_place and the button tasks re-plan every step
    with a gain below one and velocity damping, so they tolerate a step of
    action latency, action noise and +-20% arm gain (the real-proxy variant).

Env attributes other code relies on: task_name, instruction, camera_names,
image_shape, state_dim, action_dim, control_hz, max_steps, and
task_distance() (metres still to go, for the robot's "no progress" help
rule).  Privileged accessors for experts and tests: ee_position(),
ee_velocity(), finger_gap(), and per task e.g. cube_position(),
target_position(), place_cube(), place_target().

Adding a task
    1. Subclass `sim.tabletop_env.TabletopArmEnv` in a new module under sim/:
       set `task_name`, `instruction`, `default_max_steps`, and implement
       `_objects_xml()` (MJCF bodies for the task's objects; use contype=0
       conaffinity=0 for markers), `_randomise_objects()` (place them with
       `self.np_random`), `_is_success()`, `_task_info()`, `task_distance()`
       and `expert()`.
       Override `_arm_overrides()` to change the arm's workspace or home pose,
       and `_update_visuals()` to change what the cameras see (e.g. a cue lamp).
    2. Write a stateless expert for it in sim/experts/ (subclass
       `ScriptedExpert` and implement `_decide`).
    3. Add it to `TASKS` in sim/registry.py (or call `sim.register_task`).
"""

import os

# Headless rendering; must be set before mujoco is first imported.
os.environ.setdefault("MUJOCO_GL", "egl")

from sim.cued_button import CuedButtonEnv  # noqa: E402
from sim.experts import (  # noqa: E402
    CuedButtonExpert,
    PickPlaceExpert,
    PressButtonExpert,
    PushCubeExpert,
    ReachExpert,
    ScriptedExpert,
)
from sim.pick_place import PickPlaceEnv  # noqa: E402
from sim.press_button import PressButtonEnv  # noqa: E402
from sim.push_cube import PushCubeEnv  # noqa: E402
from sim.reach import ReachEnv  # noqa: E402
from sim.registry import TASKS, check_tasks, make, make_expert, make_rl_env, parse_tasks, register_task  # noqa: E402
from sim.variants import DEFAULT_SHIFT, VARIANTS, RealityGap  # noqa: E402
from sim.tabletop_env import TabletopArmEnv  # noqa: E402

__all__ = [
    "TASKS",
    "make",
    "make_expert",
    "make_rl_env",
    "parse_tasks",
    "check_tasks",
    "VARIANTS",
    "DEFAULT_SHIFT",
    "RealityGap",
    "register_task",
    "TabletopArmEnv",
    "PushCubeEnv",
    "ReachEnv",
    "PickPlaceEnv",
    "PressButtonEnv",
    "CuedButtonEnv",
    "ScriptedExpert",
    "PushCubeExpert",
    "ReachExpert",
    "PickPlaceExpert",
    "PressButtonExpert",
    "CuedButtonExpert",
]

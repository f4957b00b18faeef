"""Tests for the tasks reach, pick_place, press_button and cued_button, and their experts."""

import os

# Headless rendering; must be set before mujoco is first imported.
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import sim  # noqa: E402
from sim.buttons import PRESS_THRESHOLD  # noqa: E402
from sim.cued_button import CUE_STEPS  # noqa: E402
from sim.experts import PressButtonExpert  # noqa: E402

NEW_TASKS = ("reach", "pick_place", "press_button", "cued_button")
MAX_STEPS = {"reach": 40, "pick_place": 100, "press_button": 50, "cued_button": CUE_STEPS + 50}
IMAGE_SHAPE = (96, 96, 3)
EXPERT_SEEDS = range(10)
TAKEOVER_SEEDS = range(5)
RANDOM_STEPS_BEFORE_TAKEOVER = 6
HOLD = np.array([0.0, 0.0, 0.0, 1.0], dtype=np.float32)
# Actions both cue runs take after the cue phase (their frames must stay identical).
SAME_ACTIONS_AFTER_CUE = np.array([[0.5, 0.5, -0.5, 1.0], [-0.3, 0.2, 0.0, -1.0]], dtype=np.float32)


@pytest.fixture(scope="module")
def envs():
    made = {task: sim.make(task) for task in NEW_TASKS}
    yield made
    for env in made.values():
        env.close()


def run_expert(env, expert, max_steps=None):
    """Let the expert act until the episode ends; return the last step's result."""
    for _ in range(max_steps or env.max_steps - env.step_count):
        result = env.step(expert.act(env))
        if result[2] or result[3]:
            break
    return result


def skip_cue_phase(env):
    """Step through the cue phase of cued_button (a no-op for the other tasks)."""
    while getattr(env, "cue_visible", False):
        env.step(HOLD)


def drive_to(env, target_xyz, gripper, steps):
    """Move the grasp centre towards `target_xyz` with a simple proportional command."""
    for _ in range(steps):
        delta = (np.asarray(target_xyz) - env.ee_position()) / env.max_ee_step
        env.step(np.append(np.clip(delta, -1.0, 1.0), gripper).astype(np.float32))


# ---- common contract -------------------------------------------------------------


def test_tasks_are_registered_and_exported():
    for task in NEW_TASKS:
        assert task in sim.TASKS
    for name in ("ReachEnv", "PickPlaceEnv", "PressButtonEnv", "CuedButtonEnv", "ScriptedExpert"):
        assert name in sim.__all__ and hasattr(sim, name)


def test_instructions_use_distinct_words():
    instructions = {task: sim.TASKS[task].instruction for task in ("push_cube", *NEW_TASKS)}
    assert len(set(instructions.values())) == len(instructions)
    words = {task: set(text.split()) for task, text in instructions.items()}
    # Each task has words (its verb, object and colour) no other task uses.
    for task, own in words.items():
        others = set().union(*(w for t, w in words.items() if t != task))
        assert own - others, task


@pytest.mark.parametrize("task", NEW_TASKS)
def test_env_attributes_and_observations(envs, task):
    env = envs[task]
    assert env.task_name == task
    assert env.camera_names == ("front", "wrist")
    assert env.max_steps == MAX_STEPS[task]
    assert (env.state_dim, env.action_dim, env.control_hz) == (7, 4, 10)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    for name in env.camera_names:
        assert obs["images"][name].shape == IMAGE_SHAPE and obs["images"][name].dtype == np.uint8
    assert obs["state"].shape == (7,) and obs["state"].dtype == np.float32
    assert info["is_success"] is False
    assert isinstance(env.task_distance(), float) and env.task_distance() > 0.02
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs) and reward == 0.0 and not terminated


def test_push_cube_task_distance_is_cube_to_target():
    env = sim.make("push_cube")
    try:
        env.reset(seed=0)
        assert env.task_distance() == env.cube_to_target()
    finally:
        env.close()


@pytest.mark.parametrize("task", NEW_TASKS)
def test_expert_succeeds(envs, task):
    env = envs[task]
    expert = sim.make_expert(env)
    successes = 0
    for seed in EXPERT_SEEDS:
        env.reset(seed=seed)
        start_distance = env.task_distance()
        _, reward, terminated, truncated, info = run_expert(env, expert)
        successes += info["is_success"]
        if info["is_success"]:
            assert terminated and not truncated and reward == 1.0
            assert env.task_distance() < start_distance
    assert successes == len(EXPERT_SEEDS)


@pytest.mark.parametrize("task", NEW_TASKS)
def test_expert_takes_over_after_random_actions(envs, task):
    env = envs[task]
    expert = sim.make_expert(env)
    successes = 0
    for seed in TAKEOVER_SEEDS:
        env.reset(seed=seed)
        skip_cue_phase(env)
        rng = np.random.default_rng(seed)
        for _ in range(RANDOM_STEPS_BEFORE_TAKEOVER):
            *_, terminated, _, _ = env.step(rng.uniform(-1, 1, size=4).astype(np.float32))
            if terminated:
                break
        if not terminated:
            successes += run_expert(env, expert)[4]["is_success"]
    assert successes >= len(TAKEOVER_SEEDS) - 1


@pytest.mark.parametrize(
    "task, rgb_test",
    [
        ("reach", lambda r, g, b: (r > 150) & (g < 90) & (b > 150)),  # magenta ball
        ("pick_place", lambda r, g, b: (r > 180) & (g > 150) & (b < 80)),  # yellow block
        ("pick_place", lambda r, g, b: (b > 150) & (r < 90) & (g < 120)),  # blue square
        ("press_button", lambda r, g, b: (r > 180) & (g > 60) & (g < 150) & (b < 60)),  # orange cap
        ("cued_button", lambda r, g, b: (g > 110) & (b > 110) & (r < 60)),  # teal caps
        ("cued_button", lambda r, g, b: (r > 200) & (g > 200) & (b < 150)),  # lit lens
    ],
)
def test_front_camera_sees_the_objects(envs, task, rgb_test):
    for seed in range(3):
        obs, _ = envs[task].reset(seed=seed)
        image = obs["images"]["front"].astype(int)
        assert rgb_test(image[..., 0], image[..., 1], image[..., 2]).sum() >= 4, seed


@pytest.mark.parametrize("task", NEW_TASKS)
def test_objects_spawn_inside_the_workspace(envs, task):
    env = envs[task]
    for seed in range(20):
        env.reset(seed=seed)
        points = {
            "reach": lambda: [env.marker_position()[:2]],
            "pick_place": lambda: [env.block_position()[:2], env.zone_position()],
            "press_button": lambda: [env.button.position()],
            "cued_button": lambda: [button.position() for button in env.buttons],
        }[task]()
        for xy in points:
            assert np.all(np.abs(xy) <= 0.2)


# ---- success detection can fail --------------------------------------------------


def test_reach_needs_the_gripper_at_the_ball(envs):
    env = envs["reach"]
    env.reset(seed=0)
    ee = env.ee_position()
    env.place_marker(ee + [0.04, 0.0, 0.0])
    assert not env.step(HOLD)[4]["is_success"]
    env.place_marker(env.ee_position() + [0.0, 0.015, 0.0])
    *_, terminated, _, info = env.step(HOLD)
    assert terminated and info["is_success"]


def test_pick_place_needs_the_block_set_down_and_released(envs):
    env = envs["pick_place"]
    env.reset(seed=1)
    expert = sim.make_expert(env)
    history = []
    for _ in range(env.max_steps):
        *_, terminated, truncated, info = env.step(expert.act(env))
        history.append((expert.last_phase, env.block_placed(), info))
        if terminated or truncated:
            break
    assert info["is_success"]
    assert any(phase == "carry" for phase, _, _ in history)  # it was carried through the air
    assert not any(info["is_success"] for _, _, info in history[:-1])
    # Before letting go the block rested in the zone while held: not yet a success.
    assert any(placed and info["block_grasped"] for _, placed, info in history)
    assert not history[-1][2]["block_grasped"]


def test_pick_place_block_must_be_inside_the_square(envs):
    env = envs["pick_place"]
    env.reset(seed=2)
    zone = env.zone_position()
    env.place_block(zone + [env.zone_half_size + 0.01, 0.0])  # centre just outside
    *_, terminated, _, info = env.step(HOLD)
    assert not terminated and not info["is_success"]
    env.place_block(zone + [0.0, 0.0], height=0.05)  # in the air above it: not yet
    assert not env.block_placed()
    for _ in range(3):  # dropped, it lands in the square untouched
        *_, terminated, _, info = env.step(HOLD)
    assert terminated and info["is_success"]


def test_press_button_needs_the_cap_past_the_threshold(envs):
    env = envs["press_button"]
    env.reset(seed=3)
    button_xy = env.button.position()
    fingertips = env.arm.fingertip_below_ee
    drive_to(env, [*button_xy, env.button.cap_top_rest_z + fingertips + 0.03], 1.0, 10)
    drive_to(env, [*button_xy, env.button.cap_top_rest_z + fingertips - PRESS_THRESHOLD / 2], 1.0, 5)
    assert 0.001 < env.button.depression() < PRESS_THRESHOLD
    assert not env.step(HOLD)[4]["is_success"]
    assert run_expert(env, sim.make_expert(env))[4]["is_success"]


# ---- cued_button: the memory task -----------------------------------------------


class _WrongButtonExpert(PressButtonExpert):
    def _target_button(self, env):
        return env.buttons[1 - env.cue]


def test_pressing_the_wrong_button_fails(envs):
    env = envs["cued_button"]
    for seed in range(2):
        env.reset(seed=seed)
        _, reward, terminated, truncated, info = run_expert(env, _WrongButtonExpert())
        assert terminated and not truncated
        assert reward == 0.0 and info["is_success"] is False and info["wrong_button_pressed"]


def test_arm_is_held_during_the_cue_phase(envs):
    env = envs["cued_button"]
    _, info = env.reset(seed=4)
    home = env.ee_position()
    visible = [info["cue_visible"]]
    for _ in range(CUE_STEPS):
        *_, info = env.step(np.array([1.0, 1.0, -1.0, -1.0], dtype=np.float32))
        visible.append(info["cue_visible"])
    assert visible == [True] * CUE_STEPS + [False]
    assert np.abs(env.ee_position() - home).max() < 1e-3
    assert env.finger_gap() < 1e-3
    env.step(np.array([1.0, 0.0, 0.0, 1.0], dtype=np.float32))  # now obeyed
    assert env.ee_position()[0] - home[0] > 0.01


def test_cue_comes_from_the_seed_and_can_be_overridden(envs):
    env = envs["cued_button"]
    drawn = set()
    for seed in range(10):
        env.reset(seed=seed)
        drawn.add(env.cue)
        layout = [button.position() for button in env.buttons]
        for cue in (0, 1):
            env.reset(seed=seed, options={"cue": cue})
            assert env.cue == cue
            np.testing.assert_array_equal([button.position() for button in env.buttons], layout)
    assert drawn == {0, 1}
    with pytest.raises(ValueError):
        env.reset(seed=0, options={"cue": 2})


@pytest.mark.parametrize("variant", ["sim", "real-proxy"])
def test_observations_after_the_cue_phase_do_not_leak_the_cue(variant):
    """Same seed, both cues: the cue-phase frames differ (the lamp), every later
    observation is bit-identical, yet the expert heads for different buttons."""
    env = sim.make("cued_button", variant=variant)
    expert = sim.make_expert(env)
    try:
        for seed in range(2):
            frames, actions = {}, {}
            for cue in (0, 1):
                obs, _ = env.reset(seed=seed, options={"cue": cue})
                frames[cue] = [obs]
                for _ in range(CUE_STEPS):
                    frames[cue].append(env.step(HOLD)[0])
                actions[cue] = expert.act(env)
                for action in SAME_ACTIONS_AFTER_CUE:
                    frames[cue].append(env.step(action)[0])
            assert not np.array_equal(frames[0][0]["images"]["front"], frames[1][0]["images"]["front"])
            for after_0, after_1 in zip(frames[0][CUE_STEPS:], frames[1][CUE_STEPS:]):
                np.testing.assert_array_equal(after_0["state"], after_1["state"])
                for name in env.camera_names:
                    np.testing.assert_array_equal(after_0["images"][name], after_1["images"][name])
            assert np.abs(actions[0][:2] - actions[1][:2]).max() > 0.1
    finally:
        env.close()

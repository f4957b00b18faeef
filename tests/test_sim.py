"""Tests for the tabletop simulation package `sim` (push_cube task + expert)."""

import os

# Headless rendering; must be set before mujoco is first imported (importing
# `sim` does it too, but only if nothing imported mujoco earlier).
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import sim  # noqa: E402

IMAGE_SHAPE = (96, 96, 3)
EXPERT_SEEDS = range(50)
RECOVERY_SEEDS = range(30)
RANDOM_STEPS_BEFORE_TAKEOVER = 8


@pytest.fixture(scope="module")
def env():
    env = sim.make("push_cube")
    yield env
    env.close()


def run_expert(env, expert, max_steps=None):
    """Let the expert act until the episode ends; return the last step's result."""
    for _ in range(max_steps or env.max_steps):
        obs, reward, terminated, truncated, info = env.step(expert.act(env))
        if terminated or truncated:
            break
    return obs, reward, terminated, truncated, info


def test_env_attributes(env):
    assert env.task_name == "push_cube"
    assert env.instruction == "push the red cube onto the green target"
    assert env.camera_names == ("front", "wrist")
    assert env.image_shape == IMAGE_SHAPE
    assert env.state_dim == 7
    assert env.action_dim == 4
    assert env.control_hz == 10
    assert env.max_steps == 80
    assert env.action_space.shape == (4,)
    assert env.action_space.dtype == np.float32


def test_observation_shapes_and_dtypes(env):
    obs, info = env.reset(seed=0)
    assert set(obs) == {"images", "state"}
    assert set(obs["images"]) == {"front", "wrist"}
    for name in env.camera_names:
        assert obs["images"][name].shape == IMAGE_SHAPE
        assert obs["images"][name].dtype == np.uint8
    assert obs["state"].shape == (env.state_dim,)
    assert obs["state"].dtype == np.float32
    assert env.observation_space.contains(obs)
    assert info["is_success"] is False
    assert isinstance(info["cube_to_target"], float)

    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert reward == 0.0


def test_image_size_is_a_constructor_parameter():
    env = sim.make("push_cube", image_size=(48, 64))
    try:
        obs, _ = env.reset(seed=0)
        assert env.image_shape == (48, 64, 3)
        assert obs["images"]["front"].shape == obs["images"]["wrist"].shape == (48, 64, 3)
    finally:
        env.close()


def test_front_camera_sees_cube_and_target(env):
    obs, _ = env.reset(seed=3)
    image = obs["images"]["front"].astype(int)
    red = (image[..., 0] > 150) & (image[..., 1] < 80) & (image[..., 2] < 80)
    green = (image[..., 1] > 120) & (image[..., 0] < 100) & (image[..., 2] < 100)
    assert red.sum() > 5
    assert green.sum() > 5


def test_state_is_proprioception_only(env):
    obs, _ = env.reset(seed=0)
    expected = np.concatenate([env.ee_position(), [env.finger_gap()], env.ee_velocity()])
    np.testing.assert_allclose(obs["state"], expected, atol=1e-6)


def test_state_does_not_depend_on_cube_or_target():
    """Same seed, but in one env the cube and target are moved elsewhere:
    arm motions far from them must give identical states, different images."""
    env_a, env_b = sim.make("push_cube"), sim.make("push_cube")
    try:
        env_a.reset(seed=5)
        env_b.reset(seed=5)
        # Move cube and target to corners the arm does not visit below.
        env_b.place_cube([-0.2, -0.2], yaw=0.3)
        env_b.place_target([0.2, -0.2])
        for action in ([0.5, 0.3, 0.0, 1.0], [0.0, 0.5, 0.2, -1.0], [0.0, 0.0, 0.0, 0.0]):
            obs_a, *_ = env_a.step(np.array(action, dtype=np.float32))
            obs_b, *_ = env_b.step(np.array(action, dtype=np.float32))
            np.testing.assert_array_equal(obs_a["state"], obs_b["state"])
        assert not np.array_equal(obs_a["images"]["front"], obs_b["images"]["front"])
    finally:
        env_a.close()
        env_b.close()


def test_same_seed_gives_identical_observations(env):
    actions = np.random.default_rng(0).uniform(-1, 1, size=(5, 4)).astype(np.float32)

    def rollout(seed):
        observations = [env.reset(seed=seed)[0]]
        observations += [env.step(action)[0] for action in actions]
        return observations

    first, second = rollout(seed=11), rollout(seed=11)
    for obs_1, obs_2 in zip(first, second):
        np.testing.assert_array_equal(obs_1["state"], obs_2["state"])
        for name in obs_1["images"]:
            np.testing.assert_array_equal(obs_1["images"][name], obs_2["images"][name])

    other = env.reset(seed=12)[0]
    assert not np.array_equal(first[0]["images"]["front"], other["images"]["front"])


def test_reset_places_cube_and_target_apart(env):
    for seed in range(20):
        _, info = env.reset(seed=seed)
        assert info["cube_to_target"] >= 0.1
        assert np.all(np.abs(env.cube_position()[:2]) <= 0.15 + 1e-9)


def test_end_effector_stays_in_workspace_and_above_table(env):
    env.reset(seed=0)
    for action in ([1, 1, -1, 1], [-1, -1, -1, -1]):
        for _ in range(25):
            env.step(np.array(action, dtype=np.float32))
        ee = env.ee_position()
        assert np.all(ee >= env.arm.low - 2e-3) and np.all(ee <= env.arm.high + 2e-3)
        assert ee[2] - env.arm.fingertip_below_ee > 0.0


def test_truncates_at_max_steps():
    env = sim.make("push_cube", max_steps=3)
    try:
        env.reset(seed=0)
        still = np.zeros(4, dtype=np.float32)
        results = [env.step(still) for _ in range(3)]
        assert [r[3] for r in results] == [False, False, True]
        assert not any(r[2] for r in results)
    finally:
        env.close()


def test_expert_action_format(env):
    env.reset(seed=0)
    action = sim.make_expert(env).act(env)
    assert action.shape == (4,) and action.dtype == np.float32
    assert np.all(np.abs(action) <= 1.0)
    noisy = sim.make_expert(env, noise=0.5, seed=0).act(env)
    assert noisy.shape == (4,) and np.all(np.abs(noisy) <= 1.0)


def test_success_gives_reward_one_and_terminates(env):
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = run_expert(env, sim.make_expert(env))
    assert terminated and not truncated
    assert reward == 1.0
    assert info["is_success"] is True
    assert info["cube_to_target"] <= env.target_radius


def test_expert_success_rate(env):
    expert = sim.make_expert(env)
    successes = 0
    for seed in EXPERT_SEEDS:
        env.reset(seed=seed)
        successes += run_expert(env, expert)[4]["is_success"]
    assert successes / len(EXPERT_SEEDS) >= 0.95


def test_expert_recovers_after_random_actions(env):
    expert = sim.make_expert(env)
    successes = 0
    for seed in RECOVERY_SEEDS:
        env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        for _ in range(RANDOM_STEPS_BEFORE_TAKEOVER):
            env.step(rng.uniform(-1, 1, size=4).astype(np.float32))
        successes += run_expert(env, expert, env.max_steps - RANDOM_STEPS_BEFORE_TAKEOVER)[4]["is_success"]
    assert successes / len(RECOVERY_SEEDS) >= 0.9


@pytest.mark.parametrize("cube_xy", [(0.25, 0.25), (-0.25, 0.05), (0.1, -0.25)])
def test_expert_recovers_cube_pushed_against_rim(env, cube_xy):
    """Cube at the edge of the reach: the arm cannot get behind it to push
    towards the target, so the expert has to drag it out first."""
    env.reset(seed=1)
    env.place_cube(cube_xy)
    env.place_target([0.0, 0.0])
    expert = sim.make_expert(env)
    phases = []
    for _ in range(env.max_steps):
        action = expert.act(env)
        phases.append(expert.last_phase)
        *_, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    assert "drag" in phases
    assert info["is_success"]


def test_registry():
    assert "push_cube" in sim.TASKS
    with pytest.raises(ValueError, match="push_cube"):
        sim.make("no_such_task")
    with pytest.raises(ValueError, match="unknown variant"):
        sim.make("push_cube", variant="no_such_variant")


def test_close_is_idempotent():
    env = sim.make("push_cube")
    env.reset(seed=0)
    env.close()
    env.close()


# Runs in its own process, so that a crash fails the test instead of killing pytest. The main
# thread owns two envs; another thread, rendering an env of its own, closes one of them and
# collects the other (an unclosed env in a reference cycle). Neither may touch that thread's
# renderer: MuJoCo used to free them there, deleting its GL objects by number in the wrong context.
FOREIGN_CLOSE_SCRIPT = r"""
import gc, json, sys, threading, weakref
import numpy as np
import sim

def front(env):
    return env.reset(seed=0)[0]["images"]["front"]

result, go, done = {}, threading.Event(), threading.Event()
collected = sim.make("reach", image_size=32)
front(collected)
closed = sim.make("reach", image_size=32)
front(closed)  # rendered last: its context is still current on the main thread
gc.disable()  # collections only where this script asks for them

def other_thread():
    env = sim.make("reach", image_size=32)
    reference = front(env)
    try:
        front(closed)  # still current on the main thread: refused
    except Exception as error:
        result["render_elsewhere"] = type(error).__name__
    try:
        closed.close()
    except Exception as error:
        result["close_error"] = repr(error)
    result["same_after_close"] = bool(np.array_equal(front(env), reference))
    go.set()
    done.wait()
    gc.collect()  # finalises `collected` here
    result["same_after_collect"] = bool(np.array_equal(front(env), reference))
    env.close()

thread = threading.Thread(target=other_thread)
thread.start()
go.wait()
front(collected)  # current on the main thread again, then garbage
collected._cycle = collected
freed = weakref.ref(getattr(collected._renderer, "_renderer", collected._renderer))
del collected
done.set()
thread.join()
again = sim.make("reach", image_size=32)  # the main thread frees what was handed back to it
result["main_renders"] = bool(front(again).any())
again.close()
result["freed_on_main"] = freed() is None or freed()._mjr_context is None
print(json.dumps(result))
"""


def test_an_env_closed_or_collected_on_another_thread_leaves_that_threads_renderer_alone(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "MUJOCO_GL": "egl", "PYTHONPATH": path}
    run = subprocess.run([sys.executable, "-c", FOREIGN_CLOSE_SCRIPT], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env=env)
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stderr[-3000:]}"
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert "close_error" not in result, result
    assert result["same_after_close"] and result["same_after_collect"], result
    assert "render_elsewhere" in result, result
    assert result["main_renders"] and result["freed_on_main"], result
    assert "Exception ignored" not in run.stderr, run.stderr[-3000:]

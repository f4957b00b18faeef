"""The real-proxy variant: a shifted world with the same layouts, refused for RL rollouts."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import sim  # noqa: E402

HOLD = np.array([0.0, 0.0, 0.0, 1.0], np.float32)
PUSH_X = np.array([1.0, 0.0, 0.0, 1.0], np.float32)


@pytest.fixture(scope="module")
def envs():
    made = {variant: sim.make("push_cube", variant=variant) for variant in sim.VARIANTS}
    made["zero-shift"] = sim.make("push_cube", variant="real-proxy", shift=0.0)
    yield made
    for env in made.values():
        env.close()


def test_same_seed_same_layout_different_world(envs):
    sim_obs, _ = envs["sim"].reset(seed=3)
    real_obs, _ = envs["real-proxy"].reset(seed=3)
    np.testing.assert_allclose(envs["sim"].cube_position(), envs["real-proxy"].cube_position())
    np.testing.assert_allclose(envs["sim"].target_position(), envs["real-proxy"].target_position())
    for name in envs["sim"].camera_names:  # lighting, colours, camera mount and pixel noise
        difference = np.abs(sim_obs["images"][name].astype(int) - real_obs["images"][name].astype(int))
        assert difference.mean() > 5, name
    assert not np.array_equal(sim_obs["state"], real_obs["state"])  # sensor noise
    np.testing.assert_allclose(sim_obs["state"], real_obs["state"], atol=0.02)


def test_zero_shift_is_the_sim_world(envs):
    for env in (envs["sim"], envs["zero-shift"]):
        env.reset(seed=4)
    for _ in range(3):
        a, *_ = envs["sim"].step(PUSH_X)
        b, *_ = envs["zero-shift"].step(PUSH_X)
    np.testing.assert_array_equal(a["state"], b["state"])
    np.testing.assert_array_equal(a["images"]["front"], b["images"]["front"])


def test_actions_arrive_late_and_weaker(envs):
    """One step of latency: the first command moves the sim arm but not the real-proxy one; once
    it arrives, the same command moves the real-proxy arm less (lower gain)."""
    moved = {}
    for variant in sim.VARIANTS:
        env = envs[variant]
        env.reset(seed=5)
        start = env.ee_position()
        env.step(PUSH_X)
        first = env.ee_position()[0] - start[0]
        for _ in range(3):
            env.step(PUSH_X)
        moved[variant] = (first, env.ee_position()[0] - start[0])
    assert moved["sim"][0] > 0.02
    assert abs(moved["real-proxy"][0]) < 0.01
    # Three delivered commands on real-proxy against four on sim, and each one shorter.
    assert moved["real-proxy"][1] < 0.8 * moved["sim"][1]


def test_shift_size_is_a_parameter():
    gaps = []
    for shift in (0.5, 2.0):
        env = sim.make("push_cube", variant="real-proxy", shift=shift)
        gaps.append(env.shift)
        env.close()
    assert gaps == [0.5, 2.0]
    with sim.make("push_cube", variant="real-proxy") as env:
        assert env.shift == sim.DEFAULT_SHIFT
    with pytest.raises(ValueError, match="real-proxy variant only"):
        sim.make("push_cube", variant="sim", shift=1.0)
    with pytest.raises(ValueError, match="unknown variant"):
        sim.make("push_cube", variant="reality")


def test_real_proxy_is_refused_for_rl_rollouts():
    with pytest.raises(ValueError, match="RL rollouts run in simulation only"):
        sim.make_rl_env("push_cube", variant="real-proxy")
    env = sim.make_rl_env("push_cube")
    assert env.allows_rl_rollouts
    env.close()
    env = sim.make("push_cube", variant="real-proxy")
    assert not env.allows_rl_rollouts
    env.close()


@pytest.mark.parametrize("task", sorted(sim.TASKS))
def test_expert_copes_with_real_proxy(task):
    env = sim.make(task, variant="real-proxy")
    expert = sim.make_expert(env)
    successes = 0
    for seed in range(6):
        env.reset(seed=seed)
        for _ in range(env.max_steps):
            _, _, terminated, truncated, info = env.step(expert.act(env))
            if terminated or truncated:
                break
        successes += info["is_success"]
    env.close()
    assert successes >= 5, f"{task}: expert succeeded {successes}/6 on real-proxy"

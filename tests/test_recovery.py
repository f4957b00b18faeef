"""sim.recovery: snapshots restore a running episode exactly; the expert's recovery labels failures."""

from __future__ import annotations

import numpy as np

import sim
from sim.recovery import expert_recovers, failure_step, restore, snapshot


def test_a_restored_snapshot_replays_the_same_future():
    env = sim.make("push_cube")
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        env.step(rng.uniform(-1, 1, 4))
    state = snapshot(env)
    actions = rng.uniform(-1, 1, (10, 4))
    first = [env.step(a)[0]["state"] for a in actions]
    restore(env, state)
    second = [env.step(a)[0]["state"] for a in actions]
    assert np.array_equal(np.stack(first), np.stack(second))
    assert env.step_count == 15
    env.close()


def test_failure_step_is_where_the_expert_stops_recovering():
    env = sim.make("reach", max_steps=20)
    env.reset(seed=1)
    expert = sim.make_expert(env)
    states = []
    for step in range(20):  # drive away from the marker: the episode is lost once time runs out
        if step % 4 == 0:
            states.append((step, snapshot(env)))
        env.step(np.array([0.0, 0.0, 1.0, 1.0]) if step < 10 else np.zeros(4))
    assert expert_recovers(env, states[0][1], expert)  # from the start the expert still makes it
    lost = failure_step(env, states, expert, end=20)
    assert 0 < lost <= 16 and lost % 4 == 0
    assert not expert_recovers(env, dict(states)[lost], expert)
    assert expert_recovers(env, dict(states)[lost - 4], expert)
    env.close()


def test_restoring_leaves_the_env_usable_for_later_episodes():
    env = sim.make("press_button")
    expert = sim.make_expert(env)

    def expert_episode(seed):
        env.reset(seed=seed)
        for _ in range(env.max_steps):
            _, _, terminated, truncated, info = env.step(expert.act(env))
            if terminated or truncated:
                return info["is_success"]

    assert expert_episode(0)
    env.reset(seed=1)
    state = snapshot(env)
    env.step(np.zeros(4))
    restore(env, state)
    expert_recovers(env, state, expert)
    assert expert_episode(2)  # the task's helpers still read the env's live physics
    env.close()

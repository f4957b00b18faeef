"""Simulated operators: the imperfection model over any expert, and the sim driver's experts."""

from __future__ import annotations

import numpy as np
import pytest

from robot_client.operators import OperatorModel
from robot_client.teleop import RemoteJog, ScriptedOperator


class CountingExpert:
    """An expert whose n-th call returns a distinct action, so tests can tell calls apart."""

    def __init__(self, action_dim: int, values=None):
        self.calls = 0
        self.action_dim = action_dim
        self.values = values

    def __call__(self, observation, env) -> np.ndarray:
        self.calls += 1
        if self.values is not None:
            return np.asarray(self.values, np.float32)
        return (np.linspace(-0.9, 0.9, self.action_dim) * np.cos(self.calls)).astype(np.float32)


class FakeDriver:
    """What ScriptedOperator reads from a driver, without an env."""

    def __init__(self, action_dim=3, setpoint_action_dims=(), last_action=None):
        self.action_dim = action_dim
        self.setpoint_action_dims = setpoint_action_dims
        self.last_action = last_action
        self.raw_observation = {"state": np.zeros(2, np.float32)}
        self.env = None
        self.episodes = 1


def operator(model, action_dim=3, setpoint_action_dims=(), last_action=None, values=None):
    expert = CountingExpert(action_dim, values)
    driver = FakeDriver(action_dim, setpoint_action_dims, last_action)
    return ScriptedOperator(driver, segment_steps=100, expert=expert, model=model), expert


def test_perfect_operator_reproduces_the_expert_exactly():
    op, _ = operator(OperatorModel.perfect(seed=0))
    twin = CountingExpert(3)
    op.begin("op-1")
    for _ in range(20):
        assert np.array_equal(op.action(None), twin(None, None))
    for _ in range(5):
        assert np.array_equal(op.expert_action(), twin(None, None))


def test_reaction_delay_holds_still_for_k_ticks_then_acts():
    last = np.array([0.4, -0.3, 0.7], np.float32)
    model = OperatorModel(noise_std=0.0, reaction_delay_steps=3, suboptimality=0.0)
    op, expert = operator(model, setpoint_action_dims=(2,), last_action=last)
    twin = CountingExpert(3)
    for _ in range(2):  # every takeover starts with the delay again
        op.begin("op-1")
        for _ in range(3):  # no motion, the gripper-like set-point kept as last commanded
            assert np.array_equal(op.action(None), np.array([0.0, 0.0, 0.7], np.float32))
            assert op.holding  # recorded, but no label for the learner
        calls_before = expert.calls
        for _ in range(4):
            assert np.array_equal(op.action(None), twin(None, None))
            assert not op.holding
        assert expert.calls == calls_before + 4, "the expert was consulted while holding still"


def test_hold_before_any_command_keeps_the_experts_set_point():
    model = OperatorModel(noise_std=0.0, reaction_delay_steps=1, suboptimality=0.0)
    op, _ = operator(model, setpoint_action_dims=(2,), values=[0.5, 0.5, -1.0])
    op.begin("op-1")
    assert np.array_equal(op.action(None), [0.0, 0.0, -1.0])


def test_demonstrations_have_no_reaction_delay():
    op, _ = operator(OperatorModel(noise_std=0.0, reaction_delay_steps=5, suboptimality=0.0), values=[0.5, 0.5, 0.5])
    assert np.array_equal(op.expert_action(), [0.5, 0.5, 0.5])


def test_noise_has_the_configured_std():
    op, _ = operator(OperatorModel(noise_std=0.1, reaction_delay_steps=0, suboptimality=0.0, seed=1),
                     action_dim=4, values=np.zeros(4))
    op.begin("op-1")
    actions = np.array([op.action(None) for _ in range(4000)])
    assert np.all(np.abs(actions.mean(axis=0)) < 0.01)
    assert np.all(np.abs(actions.std(axis=0) - 0.1) < 0.01)
    reference = op.reference_action()  # the help rule's reference stays clean
    assert np.array_equal(reference, np.zeros(4))


def test_suboptimality_slows_motion_and_wanders_slowly_but_keeps_set_points():
    model = OperatorModel(noise_std=0.0, reaction_delay_steps=0, suboptimality=0.5, seed=2)
    op, _ = operator(model, setpoint_action_dims=(2,), values=[0.8, 0.8, 1.0])
    op.begin("op-1")
    actions = np.array([op.action(None) for _ in range(5000)])
    assert np.all(actions[:, 2] == 1.0)
    motion = actions[:, :2]
    assert np.all(np.abs(motion.mean(axis=0) - 0.4) < 0.1)  # (1 - s) * 0.8, plus zero-mean wander
    wander = motion - motion.mean(axis=0)
    assert np.all(wander.std(axis=0) > 0.3)  # about s, a little less where clipped at 1
    lag1 = [np.corrcoef(wander[:-1, i], wander[1:, i])[0, 1] for i in range(2)]
    assert min(lag1) > 0.8, f"the wander should vary slowly, lag-1 correlation {lag1}"


def test_operator_model_rejects_nonsense():
    with pytest.raises(ValueError, match="suboptimality"):
        OperatorModel(suboptimality=1.5)
    with pytest.raises(ValueError, match="reaction_delay_steps"):
        OperatorModel(reaction_delay_steps=-1)
    with pytest.raises(ValueError, match="noise_std"):
        OperatorModel(noise_std=-0.1)


# -- on the sim ------------------------------------------------------------------------------------

def test_sim_driver_runs_a_task_list_with_lazily_built_cached_envs():
    import sim
    from robot_client.driver import SimDriver

    tasks = list(sim.TASKS)[:2]
    driver = SimDriver(tasks, image_size=32)
    try:
        assert list(driver.tasks) == tasks and all(driver.tasks.values())
        assert list(driver._envs) == tasks[:1]  # only the first env is built up front
        first = driver.env
        if len(tasks) > 1:
            driver.reset(tasks[1], seed=0)
            assert driver.env is not first and driver.env.unwrapped.task_name == tasks[1]
        driver.reset(tasks[0], seed=0)
        assert driver.env is first  # cached, not rebuilt
        assert driver.setpoint_action_dims == (SimDriver.GRIPPER_DIM,)
        assert isinstance(driver.task_distance(), float)
        with pytest.raises(ValueError, match="unknown task"):
            driver.reset("no_such_task", seed=0)
    finally:
        driver.close()
    with pytest.raises(ValueError, match="unknown sim task"):
        SimDriver(["push_cube", "no_such_task"])


def test_default_operator_still_completes_push_cube():
    """The defaults are mildly imperfect: driving whole episodes (reaction delay included) the
    operator still succeeds on >= 90% of 20 seeds (measured: 20/20, about 27% more steps)."""
    from robot_client.driver import SimDriver

    driver = SimDriver("push_cube", image_size=32)
    op = ScriptedOperator(driver, segment_steps=10**6, model=OperatorModel(seed=0))
    successes = 0
    try:
        for seed in range(20):
            observation = driver.reset("push_cube", seed)
            op.begin("op-1")
            for step in range(driver.max_steps):
                observation, _, terminated, truncated, info = driver.step(op.action(observation))
                if terminated or truncated:
                    break
            successes += info["is_success"]
    finally:
        driver.close()
    assert successes >= 18


class _JogDriver:
    action_dim = 4
    setpoint_action_dims = (3,)
    last_action = np.array([0.3, 0.0, 0.0, 0.7], np.float32)


def test_remote_jog_moves_for_the_jog_duration_then_stops_and_holds_the_gripper():
    now = [100.0]
    jog = RemoteJog(_JogDriver(), clock=lambda: now[0])
    jog.begin("alice")
    np.testing.assert_allclose(jog.action(None), [0, 0, 0, 0.7])  # nothing pressed: still, gripper as it was
    assert jog.holding  # the person has not acted: no label
    jog.jog(0.5, -2.0, 0.0, duration_s=0.3)
    np.testing.assert_allclose(jog.action(None), [0.5, -1.0, 0.0, 0.7])  # clipped to the action range
    assert not jog.holding
    now[0] += 0.31
    np.testing.assert_allclose(jog.action(None), [0, 0, 0, 0.7])  # dead man's switch: the jog ran out
    assert jog.holding
    jog.jog(0.0, 0.0, 0.0, duration_s=0.05, gripper=-1.0)
    np.testing.assert_allclose(jog.action(None), [0, 0, 0, -1.0])
    assert not jog.holding  # the person chose the gripper
    jog.jog(0.0, 0.0, 1.0, duration_s=60.0)
    now[0] += RemoteJog.MAX_DURATION_S + 0.01
    np.testing.assert_allclose(jog.action(None), [0, 0, 0, -1.0])  # no jog lasts longer than 2 s
    with pytest.raises(ValueError):
        jog.jog(float("nan"), 0.0, 0.0, 0.3)
    with pytest.raises(ValueError):
        jog.jog(0.0, 0.0, 0.0, -1.0)
    assert not jog.wants_hand_back()  # the person hands back from the dashboard...
    now[0] += RemoteJog.IDLE_HAND_BACK_S + 1
    assert jog.wants_hand_back()  # ...unless they stopped jogging long ago (page closed, connection lost)

"""Robot-side safety: the action shield (bounds, rate, non-finite actions) and the watchdog that
holds the arm when the control loop stalls, on a real MuJoCo robot client."""

from __future__ import annotations

import json
import threading
import time

import numpy as np

from conftest import TOKEN
from robot_client.driver import SimDriver
from robot_client.loop import RobotClient, RobotConfig
from robot_client.safety import ActionLimits, SafetyShield
from robot_client.teleop import ScriptedOperator


def test_shield_clips_limits_the_rate_and_never_passes_a_nan():
    shield = SafetyShield(ActionLimits(low=np.array([-1, -1], np.float32), high=np.array([1, 0.5], np.float32),
                                       max_step=np.array([0.3, 0.3], np.float32)))
    assert shield([2.0, 2.0]).tolist() == [1.0, 0.5]                      # into the bounds
    assert np.allclose(shield([0.0, 0.5]), [0.7, 0.5])                     # at most 0.3 per tick
    assert np.allclose(shield([np.nan, 0.0]), [0.7, 0.5])                  # not finite: the last safe action
    assert np.allclose(shield([1.0, 0.5, 3.0]), [0.7, 0.5])                # wrong shape: likewise
    shield.reset()
    assert shield([np.inf, 0.0]).tolist() == [0.0, 0.0]                    # first tick of an episode: hold
    assert shield.counts == {"non_finite": 3, "clipped": 1, "rate_limited": 1}
    unbounded = SafetyShield(ActionLimits.of(type("Arm", (), {"action_dim": 2, "control_hz": 10.0})()))
    assert unbounded([250.0, -40.0]).tolist() == [250.0, -40.0]             # no declared bounds: none applied


class StallingArm(SimDriver):
    """The sim arm, whose loop stalls once (a device read hanging) and which counts holds."""

    def __init__(self, *args, stall_at: int, stall_s: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.stall_at, self.stall_s, self.steps, self.holds = stall_at, stall_s, 0, []
        self.sent: list[np.ndarray] = []

    def step(self, action):
        self.steps += 1
        if self.steps == self.stall_at:
            time.sleep(self.stall_s)
        self.sent.append(np.asarray(action))
        return super().step(action)

    def hold(self):
        self.holds.append(self.steps)


def test_watchdog_holds_the_arm_when_the_loop_stalls(tmp_path):
    done = threading.Event()
    result = {}

    def run():  # the sim is built on the thread that steps it (EGL contexts are per thread)
        driver = StallingArm(["reach"], max_steps=12, stall_at=3, stall_s=1.5)
        operator = ScriptedOperator(driver)
        config = RobotConfig(robot_id="arm", tasks=("reach",), learner="127.0.0.1:1", token=TOKEN,
                             work_dir=tmp_path / "arm", demos=1, max_episodes=1, realtime=False, preview_hz=0)
        client = RobotClient(config, driver, operator, expert_action=operator.reference_action)
        client.run()
        client.close(drain_s=0)
        result["driver"] = driver
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(60)
    driver = result["driver"]
    assert driver.holds == [3], driver.holds  # once, during the stall at step 3 (the expert needs about 5)
    stats = json.loads((tmp_path / "arm" / "stats.json").read_text())
    assert stats["watchdog_holds"] == 1 and stats["episodes"] == 1
    low, high = driver.action_bounds
    assert all(np.all(a >= low) and np.all(a <= high) for a in driver.sent)

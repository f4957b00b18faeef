"""Drivers and teleop sources chosen by name: README's "Adding a driver" example, run as written.

`PointArm` below is the README's driver, registered with one line; the tests build it from dotted
flags the way `fleet robot` does and run it for an episode with a real RobotClient against a real
learner. This module must stay importable as `tests.test_drivers` from the repository root
(`fleet robot --plugin tests.test_drivers`), so nothing from conftest at module level.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robot_client.driver import DriverBase, Observation
from robot_client.plugins import DRIVERS

REPO = Path(__file__).resolve().parent.parent


# -- README "Adding a driver", verbatim -------------------------------------------------------

@dataclass
class PointArmConfig:
    size: int = 8        # camera pixels a side
    max_steps: int = 30
    task: str = "centre_point"


class PointArm(DriverBase):
    """A point on a line that must reach the middle, seen by one camera."""

    robot_type = "point_arm"
    state_dim, action_dim, control_hz = 1, 1, 10.0

    def __init__(self, config: PointArmConfig):
        self.config, self.max_steps = config, config.max_steps
        self.cameras = {"top": (config.size, config.size, 3)}
        self.tasks = {config.task: "move the point to the middle"}
        self.position = 0.0

    def reset(self, task: str, seed: int | None) -> Observation:
        self.position = float(np.random.default_rng(seed).uniform(-1, 1))
        return self._observe()

    def step(self, action: np.ndarray):
        self.position = float(np.clip(self.position + 0.2 * float(action[0]), -1, 1))
        success = abs(self.position) < 0.05
        return self._observe(), float(success), success, False, {"is_success": success}

    def expert(self, raw_observation, env) -> np.ndarray:  # the scripted operator plays it
        return np.array([np.clip(-self.position / 0.2, -1, 1)], np.float32)

    def _observe(self) -> Observation:
        image = np.zeros(self.cameras["top"], np.uint8)
        image[:, round((self.position + 1) / 2 * (self.config.size - 1))] = 255
        return Observation(images={"top": image}, state=np.array([self.position], np.float32))


DRIVERS.register("point_arm", PointArmConfig)(PointArm)

# -----------------------------------------------------------------------------------------------


def robot_plugins(argv: list[str]):
    """(driver, teleop source, help reference) from a `fleet robot` command line, as `fleet robot` builds them."""
    from core.registry import split_dotted
    from fleetlearn.cli import build_parser
    from fleetlearn.robot import ROBOT_PLUGIN_KINDS, _robot_plugins

    argv, dotted = split_dotted(["robot", *argv, "--learner", "127.0.0.1:1"], ROBOT_PLUGIN_KINDS)
    return _robot_plugins(build_parser().parse_args(argv), dotted)


def test_the_readme_driver_runs_an_episode_through_a_real_robot_client(learner_thread, token_file, tmp_path):
    from conftest import TOKEN, wait_for
    from learner.store import StoreReader
    from robot_client.driver import Driver
    from robot_client.loop import RobotClient, RobotConfig
    from robot_client.teleop import ScriptedOperator, TeleopSource

    driver, teleop, reference = robot_plugins(["--driver", "point_arm", "--driver.size", "12", "--driver.max-steps",
                                               "25", "--teleop.noise-std", "0", "--teleop.reaction-delay-steps", "0",
                                               "--teleop.suboptimality", "0", "--demos", "1"])
    assert isinstance(driver, PointArm) and driver.cameras == {"top": (12, 12, 3)} and driver.max_steps == 25
    assert isinstance(driver, Driver) and isinstance(teleop, TeleopSource)
    assert isinstance(teleop, ScriptedOperator) and reference == teleop.reference_action  # its expert plays the operator

    learner = learner_thread(train=False)
    config = RobotConfig(robot_id="point-1", tasks=tuple(driver.tasks), learner=learner.address, token=TOKEN,
                         work_dir=tmp_path / "point-1", demos=1, max_episodes=1, realtime=False, preview_hz=0)
    client = RobotClient(config, driver, teleop, expert_action=reference)
    client.run()
    [summary] = client.history
    assert summary["kind"] == "demonstration" and summary["success"], summary

    def stored():
        reader = StoreReader(tmp_path / "learner")
        rows = [dict(row) for row in reader.complete_episodes()]
        reader.close()
        return rows

    [row] = wait_for(stored, 30, "the demonstration in the learner's store")
    assert (row["robot_id"], row["task"], row["instruction"], row["kind"], row["num_steps"]) == \
        ("point-1", "centre_point", "move the point to the middle", "demonstration", summary["steps"])


def test_a_plugin_module_adds_its_driver_to_fleet_robot(token_file, tmp_path):
    command = [sys.executable, "-m", "fleetlearn.cli", "robot", "--plugin", "tests.test_drivers", "--driver",
               "point_arm", "--driver.task", "left", "--learner", "127.0.0.1:1", "--token-file", str(token_file),
               "--insecure", "--work-dir", str(tmp_path), "--max-episodes", "0"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    result = subprocess.run([*command, "--driver.colour", "red"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "driver 'point_arm' has no setting 'colour'; its settings: size, max-steps, task" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_old_flags_are_the_new_settings():
    """--sim/--variant and --env/--expert mean --driver sim/gym with the same settings."""
    old, _, _ = robot_plugins(["--sim", "reach,press_button", "--variant", "real-proxy", "--max-steps", "30"])
    new, _, _ = robot_plugins(["--driver", "sim", "--driver.tasks", "reach,press_button",
                               "--driver.variant", "real-proxy", "--driver.max-steps", "30"])
    for driver in (old, new):
        assert (list(driver.tasks), driver.robot_type, driver.max_steps) == \
            (["reach", "press_button"], "real_proxy_cartesian_arm", 30)
        driver.close()
    gym = ["tests.test_byo_env:make_env", "tests.test_byo_env:make_expert"]
    for argv in (["--env", gym[0], "--expert", gym[1], "--task", "point"],
                 ["--driver", "gym", "--driver.env", gym[0], "--driver.expert", gym[1], "--driver.task", "point"]):
        driver, teleop, reference = robot_plugins(argv)
        assert list(driver.tasks) == ["point"] and reference is not None and teleop.model.noise_std == 0.05
        driver.close()

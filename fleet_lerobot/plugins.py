"""The LeRobot driver and teleop source, registered by name for `fleet robot`:

    fleet robot --driver lerobot --driver.type so101_follower --driver.port /dev/ttyACM0 --driver.id arm-1 \\
                --teleop lerobot --teleop.type so101_leader --teleop.port /dev/ttyACM1 --teleop.id leader-1

Settings that are not the fleet's own (`type`, `task`, ...) are fields of the LeRobot device's
config, given as LeRobot takes them (JSON where they parse); `--driver.robot.KEY` names one
whose name the fleet's settings share (the sim arm's `task`). Importing this module needs no
LeRobot: the factories import it when the driver is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.registry import OTHER_SETTINGS
from robot_client.driver import DEFAULT_MAX_STEPS, Driver
from robot_client.plugins import DRIVERS, TELEOPS


@dataclass
class LeRobotDriverConfig:
    type: str = ""                   # the LeRobot robot type: so101_follower, koch_follower, fleet_sim_arm, ...
    task: str | None = None          # default: the robot config's `task`, else "default"
    instruction: str | None = None   # default: the task name
    control_hz: float = 10.0
    max_steps: int = DEFAULT_MAX_STEPS
    robot: dict[str, Any] = field(default_factory=dict, metadata=OTHER_SETTINGS)  # the LeRobot config's fields

    def __post_init__(self):
        if not self.type:
            raise ValueError("the lerobot driver needs the robot's LeRobot type: --driver.type so101_follower, ...")


@DRIVERS.register("lerobot", LeRobotDriverConfig)
def lerobot_driver(config: LeRobotDriverConfig) -> Driver:
    """Any robot LeRobot knows (needs make setup-lerobot)."""
    from fleet_lerobot.devices import build_robot
    from fleet_lerobot.driver import LeRobotDriver

    robot = build_robot(config.type, config.robot)
    task = config.task or getattr(robot.config, "task", None) or "default"  # the sim arm names its task
    return LeRobotDriver(robot, {task: config.instruction or task}, control_hz=config.control_hz,
                         max_steps=config.max_steps)


@dataclass
class LeRobotTeleopConfig:
    type: str = ""                   # so101_leader, gamepad, keyboard_ee, fleet_expert, ...
    operator_id: str = "teleop"      # who a takeover the device starts itself is credited to
    teleop: dict[str, Any] = field(default_factory=dict, metadata=OTHER_SETTINGS)  # the LeRobot config's fields

    def __post_init__(self):
        if not self.type:
            raise ValueError("the lerobot teleop source needs its LeRobot type: --teleop.type so101_leader, ...")


@TELEOPS.register("lerobot", LeRobotTeleopConfig)
def lerobot_teleop(config: LeRobotTeleopConfig, driver: Driver):
    """A person's leader arm, gamepad or keyboard through LeRobot; drives a --driver lerobot arm."""
    from fleet_lerobot.devices import build_teleoperator
    from fleet_lerobot.driver import LeRobotDriver, LeRobotTeleop

    if not isinstance(driver, LeRobotDriver):
        raise ValueError("--teleop lerobot drives a LeRobot arm: use it with --driver lerobot")
    return LeRobotTeleop(build_teleoperator(config.type, config.teleop), driver, operator_id=config.operator_id)

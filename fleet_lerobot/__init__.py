"""fleetlearn <-> LeRobot: physical arms and teleoperators through LeRobot's own classes, and the
episode store as a LeRobotDataset.

Lives in its own environment (`make setup-lerobot`): LeRobot pins its own torch. Nothing in the
main environment imports this package; every LeRobot import goes through `fleet_lerobot.shim`,
the one place that knows which LeRobot release it talks to.

- `sim_arm`: the fleet's MuJoCo arm as a LeRobot Robot ("fleet_sim_arm") and its scripted expert
  as a LeRobot Teleoperator ("fleet_expert"), registered in LeRobot's config registries;
- `driver`: `LeRobotDriver`, the fleet's Driver over any LeRobot Robot, and `LeRobotTeleop`, any
  LeRobot Teleoperator as the takeover source;
- `dataset`: `fleet export --format lerobot` and `fleet import --lerobot`.
"""

_SIM_ARM = ("FleetSimArm", "FleetSimArmConfig", "FleetExpert", "FleetExpertConfig", "FleetLeader", "FleetLeaderConfig")


def __getattr__(name: str):
    # LeRobot finds a device class from its config class by name, in the config module's parent
    # package: FleetSimArmConfig -> fleet_lerobot.FleetSimArm. Resolved lazily so that importing
    # this package does not import LeRobot.
    if name in _SIM_ARM:
        from fleet_lerobot import sim_arm

        return getattr(sim_arm, name)
    raise AttributeError(f"module 'fleet_lerobot' has no attribute {name!r}")

"""LeRobot plugin entry: importing it registers fleet_sim_arm, fleet_expert and fleet_leader in
LeRobot's config registries (the classes live in fleet_lerobot.sim_arm)."""

from fleet_lerobot.sim_arm import (  # noqa: F401
    FleetExpert,
    FleetExpertConfig,
    FleetLeader,
    FleetLeaderConfig,
    FleetSimArm,
    FleetSimArmConfig,
)

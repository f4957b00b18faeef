"""The drivers and teleop sources `fleet robot` chooses by name, each with its config dataclass.

    fleet robot --driver sim --driver.tasks reach,push_cube --driver.variant real-proxy
    fleet robot --driver gym --driver.env mypkg.point:make_env --driver.expert mypkg.point:make_expert
    fleet robot --driver lerobot --driver.type so101_follower --driver.port /dev/ttyACM0 \\
                --teleop lerobot --teleop.type so101_leader --teleop.port /dev/ttyACM1

A driver's factory takes its config and returns a `Driver` (robot_client/driver.py); a teleop
source's takes its config and the driver and returns a `TeleopSource` (robot_client/teleop.py).
The LeRobot pair registers in fleet_lerobot/plugins.py (it may not import LeRobot before it is
chosen). Adding one is a module with the class and its config, and one registration line, here
or in a module named with `fleet robot --plugin MODULE` (README, "Adding a driver").
"""

from __future__ import annotations

from dataclasses import dataclass

from core.registry import Registry
from robot_client.driver import Driver, GymDriver, SimDriver, load_factory
from robot_client.operators import OperatorModel
from robot_client.teleop import NoOperator, ScriptedOperator, TeleopSource

DRIVERS: Registry = Registry("driver")
TELEOPS: Registry = Registry("teleop")


@dataclass
class SimDriverConfig:
    tasks: tuple[str, ...] = ("push_cube",)  # sim task names, or "all"
    variant: str = "sim"                     # or "real-proxy", the stand-in for a physical arm
    shift: float | None = None               # real-proxy: size of the reality gap (default: frozen)
    max_steps: int | None = None             # default: each task's own
    image_size: int = 96


@DRIVERS.register("sim", SimDriverConfig)
def sim_driver(config: SimDriverConfig) -> SimDriver:
    """The MuJoCo tasks in sim/, with their scripted experts."""
    import sim

    return SimDriver(sim.parse_tasks(",".join(config.tasks)), variant=config.variant, image_size=config.image_size,
                     max_steps=config.max_steps, shift=config.shift)


@dataclass
class GymDriverConfig:
    env: str = ""                    # MODULE:FACTORY; FACTORY() returns the env (README's contract)
    expert: str | None = None        # MODULE:FACTORY; FACTORY() returns (observation, env) -> action
    task: str | None = None          # default: the env's MODULE:FACTORY
    instruction: str | None = None   # default: the env's `instruction`, else the task name
    control_hz: float | None = None  # default: env.metadata["render_fps"]
    max_steps: int | None = None     # default: env.spec.max_episode_steps, else 200

    def __post_init__(self):
        if not self.env:
            raise ValueError("the gym driver needs its env: --driver.env MODULE:FACTORY")


@DRIVERS.register("gym", GymDriverConfig)
def gym_driver(config: GymDriverConfig) -> GymDriver:
    """Any Gymnasium env that follows the fleet's observation contract."""
    expert = None
    if config.expert:
        expert = load_factory(config.expert, "expert factory")()
        if not callable(expert):
            raise ValueError(f"expert factory {config.expert!r} returned a {type(expert).__name__}, not a "
                             "callable (observation, env) -> action")
    task = config.task or config.env
    return GymDriver({task: load_factory(config.env, "env factory")},
                     {task: config.instruction} if config.instruction else None,
                     control_hz=config.control_hz, max_steps=config.max_steps, expert=expert)


@dataclass
class ScriptedOperatorConfig:
    segment_steps: int = 20  # ticks it drives per takeover before handing back
    noise_std: float = OperatorModel.noise_std
    reaction_delay_steps: int = OperatorModel.reaction_delay_steps
    suboptimality: float = OperatorModel.suboptimality
    seed: int = 0


@TELEOPS.register("scripted", ScriptedOperatorConfig)
def scripted_operator(config: ScriptedOperatorConfig, driver: Driver) -> ScriptedOperator:
    """The driver's expert standing in for a person, as imperfect as the settings say."""
    model = OperatorModel(noise_std=config.noise_std, reaction_delay_steps=config.reaction_delay_steps,
                          suboptimality=config.suboptimality, seed=config.seed)
    return ScriptedOperator(driver, segment_steps=config.segment_steps, model=model)


@TELEOPS.register("none")
def no_operator(driver: Driver) -> TeleopSource:
    """Nobody: the robot runs its policy only (no demonstrations, takeovers or help requests)."""
    return NoOperator()


def default_teleop(driver: Driver) -> str:
    """The teleop source when none is named: the driver's own expert, if it has one."""
    return "scripted" if getattr(driver, "expert", None) is not None else "none"

"""Drivers: the one interface between the control loop and an arm (simulated or physical).

`GymDriver` runs any Gymnasium environment that follows the fleet's observation contract (the
"bring your own environment" path, README); `SimDriver` is the same driver over the MuJoCo
tasks in `sim`, which follow that contract too. `fleet robot` chooses a driver by name
(robot_client/plugins.py); README "Adding a driver" shows how to write one.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

log = logging.getLogger("fleetlearn.driver")

# Episode length when neither the caller (`fleet robot --max-steps`) nor the env
# (`env.spec.max_episode_steps`) sets one. The loop needs a bound: an episode reaches the learner
# as a complete, trainable episode only once it ends, so an env that never terminates must still
# be cut. 200 ticks is 20 s at 10 Hz: room for a short manipulation task, short enough that a
# stuck episode costs little. A warning names the flag to set a better one.
DEFAULT_MAX_STEPS = 200


@dataclass
class Observation:
    images: dict[str, np.ndarray]  # camera name -> HxWx3 uint8
    state: np.ndarray              # proprioception, float32


@runtime_checkable
class Driver(Protocol):
    """What the control loop (robot_client/loop.py, episode.py, safety.py) uses of an arm.
    `DriverBase` gives every optional member a harmless default; a driver overrides what it has."""

    robot_type: str
    cameras: dict[str, tuple[int, int, int]]  # camera name -> (H, W, 3)
    state_dim: int
    action_dim: int
    control_hz: float
    tasks: dict[str, str]          # task name -> instruction
    max_steps: int                 # of the task last reset

    def reset(self, task: str, seed: int | None) -> Observation: ...

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        """Sends an action; returns (observation, reward, terminated, truncated, info), where
        info carries "is_success"."""

    def close(self) -> None: ...

    # Optional, defaults in DriverBase.
    serves_rl: bool                               # may run RL rollouts (a simulator, never a real arm)
    jog_dims: tuple[int, int, int] | None         # action dims a remote operator jogs (x, y, z velocity)
    action_bounds: tuple[np.ndarray, np.ndarray] | None  # the shield clips into these
    max_action_rate: float | np.ndarray | None    # per second, per dimension
    last_sent: np.ndarray | None                  # what the arm reported it executed, last step

    def hold_action(self) -> np.ndarray | None:
        """The action that keeps the arm where it is (None: zeros, which stops a velocity arm)."""

    def hold(self) -> None:
        """The loop stalled: keep the arm where it is (safety.Watchdog, on its own thread)."""

    def task_distance(self) -> float | None:
        """Distance to the goal, lower is better, where the task measures one (the help rule)."""


class DriverBase:
    """The optional part of `Driver`, as harmless defaults: a driver that has a hook overrides it.

    The rest is what the teleop sources (robot_client/teleop.py) read beyond the loop: the
    driver's scripted expert, if it brings one, called as expert(raw_observation, env) (the last
    observation as the driver got it, and whatever privileged state the expert may read), the
    last action sent, and the action dimensions that are absolute set-points (a gripper opening)
    rather than motions.
    """

    serves_rl = False
    jog_dims: tuple[int, int, int] | None = None
    action_bounds: tuple[np.ndarray, np.ndarray] | None = None
    max_action_rate: float | np.ndarray | None = None
    last_sent: np.ndarray | None = None
    last_action: np.ndarray | None = None
    setpoint_action_dims: tuple[int, ...] = ()
    expert: Callable[[dict, Any], np.ndarray] | None = None
    raw_observation: Any = None
    env: Any = None

    def hold_action(self) -> np.ndarray | None:
        return None

    def hold(self) -> None:
        pass  # a simulated arm only moves when stepped

    def task_distance(self) -> float | None:
        return None

    def close(self) -> None:
        pass


class EnvContractError(ValueError):
    """An environment does not follow the contract `GymDriver` needs (see its docstring)."""


class FactorySpecError(ValueError):
    """A MODULE:FACTORY string that does not name a callable."""


def load_factory(spec: str, what: str = "factory") -> Callable:
    """The callable named by `spec` ("package.module:name" or "package.module:Class.method").

    Only a missing module or attribute becomes a `FactorySpecError`; an error raised while the
    module itself imports (a bug or a missing dependency in it) keeps its own traceback.
    """
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise FactorySpecError(f"{what} {spec!r} is not MODULE:FACTORY (for example mypackage.envs:make_env)")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is None or not (module_name == error.name or module_name.startswith(error.name + ".")):
            raise
        raise FactorySpecError(f"{what} {spec!r}: no module named {error.name!r} (is it installed, or its directory "
                               "the current directory or on PYTHONPATH?)") from None
    try:
        factory = functools.reduce(getattr, attribute.split("."), module)
    except AttributeError:
        raise FactorySpecError(f"{what} {spec!r}: module {module_name!r} has no attribute {attribute!r}") from None
    if not callable(factory):
        raise FactorySpecError(f"{what} {spec!r}: {attribute!r} is a {type(factory).__name__}, not a callable")
    return factory


def _image_problem(image: Any) -> str | None:
    """Why `image` is not an HxWx3 uint8 array, or None if it is one."""
    if not isinstance(image, np.ndarray):
        return f"is a {type(image).__name__}, not a numpy array"
    if image.dtype != np.uint8:
        return f"has dtype {image.dtype}, not uint8"
    if image.ndim != 3 or image.shape[2] != 3:
        return f"has shape {image.shape}, not (H, W, 3)"
    return None


def _embodiment_from_space(space) -> tuple[dict[str, tuple[int, int, int]], int] | None:
    """(cameras, state_dim) declared by an observation space, or None if it declares none.

    A space that has the contract's layout but wrong contents is an error; one that does not
    have the layout at all (no Dict with an "images" Dict and a "state") only means the first
    observation has to tell.
    """
    from gymnasium import spaces

    if not (isinstance(space, spaces.Dict) and isinstance(space.spaces.get("images"), spaces.Dict)
            and "state" in space.spaces):
        return None
    cameras = {}
    for name, camera in space["images"].spaces.items():
        if not (isinstance(camera, spaces.Box) and camera.dtype == np.uint8 and len(camera.shape) == 3
                and camera.shape[2] == 3):
            raise EnvContractError(f"observation_space['images'][{name!r}] is {camera}; every camera must be "
                                   "a uint8 Box of shape (H, W, 3)")
        cameras[name] = tuple(int(v) for v in camera.shape)
    state = space["state"]
    if not (isinstance(state, spaces.Box) and len(state.shape) == 1):
        raise EnvContractError(f"observation_space['state'] is {state}; it must be a 1-D Box (a float32 vector)")
    return cameras, int(state.shape[0])


def _check_action_space(task: str, space) -> None:
    from gymnasium import spaces

    if not (isinstance(space, spaces.Box) and len(space.shape) == 1):
        raise EnvContractError(f"task {task!r}: action_space is {space}; it must be a 1-D Box")
    if not (np.all(space.low <= -1.0) and np.all(space.high >= 1.0)):
        log.warning("task %r: action_space %s does not contain [-1, 1], the range the fleet's policy and "
                    "operators act in; the env will receive actions outside its bounds", task, space)


class GymDriver(DriverBase):
    """Any Gymnasium environment that follows the fleet's contract, behind the Driver interface.

    The contract (checked on every observation, so a violation is reported where it happens):

    - the observation is a dict with "images" (camera name -> HxWx3 uint8 array; at least one
      camera, the same cameras and shapes on every step) and "state" (a 1-D vector, sent as
      float32);
    - the action space is a 1-D Box; the fleet's actions are in [-1, 1];
    - every step's info carries "is_success". A missing key is an error, not a warning: the
      fleet's evaluation, its success rates and the training of some algorithms rest on it, and
      silently counting every episode as a failure would make all of them wrong without a sign.

    The embodiment comes from the observation space when it declares the layout above, or else
    from the first observation. The control rate is `control_hz`, else
    `env.metadata["render_fps"]`; the episode length is `max_steps`, else
    `env.spec.max_episode_steps`, else `DEFAULT_MAX_STEPS` (with a warning).

    One driver may run several tasks (one embodiment): `env_factories` maps each task name to a
    no-argument factory. Each task's env is created when first needed and kept until `close()`.
    A task's instruction is `instructions[task]`, else the env's `instruction` attribute, else
    the task name. `expert`, if given, plays the operator: (raw observation, env) -> action.
    Optional env hooks: `task_distance()` (a progress measure for the help rule)
    and `metadata["setpoint_action_dims"]` (action dimensions that are absolute set-points, such
    as a gripper opening, rather than motions: a simulated operator holding still repeats them).
    """

    robot_type = "gym_env"
    # Whether this driver may serve RL rollouts (exploration by a policy in training). A
    # bring-your-own env is not assumed to be a simulator; physical arms never are.
    serves_rl = False

    def __init__(self, env_factories: Mapping[str, Callable[[], Any]], instructions: Mapping[str, str] | None = None,
                 *, control_hz: float | None = None, max_steps: int | None = None,
                 setpoint_action_dims: Sequence[int] | None = None, expert: Callable | None = None):
        if not env_factories:
            raise ValueError("a GymDriver needs at least one task")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self._factories = dict(env_factories)
        self._envs: dict[str, Any] = {}
        self._limits: dict[str, int] = {}  # task -> steps per episode
        self._max_steps = max_steps
        self.task = next(iter(self._factories))
        self.env = self._env_for(self.task)
        self.raw_observation: dict | None = None  # as the env returned it: what an expert sees
        self.last_action: np.ndarray | None = None  # the last command sent this episode
        self.episodes = 0  # resets so far; lets an operator notice a new episode
        self._step_index = 0
        if expert is not None:
            self.expert = expert

        self.action_dim = int(self.env.action_space.shape[0])
        declared = _embodiment_from_space(self.env.observation_space)
        if declared is None:
            raw, _ = self.env.reset()
            declared = self._embodiment_from_observation(raw)
        self.cameras, self.state_dim = declared

        rate = control_hz if control_hz is not None else self.env.metadata.get("render_fps")
        if rate is None:
            raise EnvContractError(f"task {self.task!r}: the env has no metadata['render_fps']; give the control "
                                   "rate explicitly (fleet robot --control-hz HZ)")
        if not float(rate) > 0:
            raise EnvContractError(f"task {self.task!r}: control rate must be > 0 Hz, got {rate}")
        self.control_hz = float(rate)
        self.max_steps = self._limits[self.task]
        dims = setpoint_action_dims if setpoint_action_dims is not None else \
            self.env.metadata.get("setpoint_action_dims", ())
        self.setpoint_action_dims = tuple(int(d) for d in dims)
        if any(not 0 <= d < self.action_dim for d in self.setpoint_action_dims):
            raise EnvContractError(f"set-point action dimensions {self.setpoint_action_dims} outside an action "
                                   f"of size {self.action_dim}")
        instructions = dict(instructions or {})
        self.tasks = {name: instructions.get(name) or self._default_instruction(name) for name in self._factories}

    # -- Driver interface ----------------------------------------------------------------------

    def reset(self, task: str, seed: int | None) -> Observation:
        if task not in self._factories:
            raise ValueError(f"unknown task {task!r}; this driver runs {sorted(self._factories)}")
        self.task = task
        self.env = self._env_for(task)
        self.max_steps = self._limits[task]
        raw, _ = self.env.reset(seed=seed)
        self.episodes += 1
        self._step_index = 0
        self.last_action = None
        return self._accept(raw, f"task {task!r}, reset")

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, np.float32)
        if action.shape != (self.action_dim,):
            raise EnvContractError(f"task {self.task!r}: action of shape {action.shape}, expected ({self.action_dim},)")
        raw, reward, terminated, truncated, info = self.env.step(action)
        self.last_action = action
        self._step_index += 1
        where = f"task {self.task!r}, step {self._step_index}"
        if "is_success" not in info:
            raise EnvContractError(f"{where}: info has no 'is_success' (keys: {sorted(info)}); the fleet's "
                                   "success rates and evaluation need it on every step")
        return self._accept(raw, where), float(reward), bool(terminated), bool(truncated), info

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()

    # -- optional hooks the loop and the operators use -----------------------------------------

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The current task's Box: the safety shield clips every action into it."""
        return self.env.action_space.low, self.env.action_space.high

    def task_distance(self) -> float | None:
        """The env's progress measure (`env.task_distance()`, lower is better), if it has one."""
        measure = getattr(self.env.unwrapped, "task_distance", None)
        distance = measure() if callable(measure) else None
        return None if distance is None else float(distance)

    # -- internals -----------------------------------------------------------------------------

    def _env_for(self, task: str):
        env = self._envs.get(task)
        if env is None:
            env = self._factories[task]()
            self._envs[task] = env
            _check_action_space(task, env.action_space)
            if len(self._envs) > 1:
                self._check_same_embodiment(task, env)
            self._limits[task] = self._episode_limit(task, env)
        return env

    def _check_same_embodiment(self, task: str, env) -> None:
        """A further task's env must fit the embodiment the robot registered with the learner."""
        if env.action_space.shape[0] != self.action_dim:
            raise EnvContractError(f"task {task!r}: action size {env.action_space.shape[0]}, but this robot's is "
                                   f"{self.action_dim}: one driver runs one embodiment")
        declared = _embodiment_from_space(env.observation_space)
        if declared is not None and declared != (self.cameras, self.state_dim):
            raise EnvContractError(f"task {task!r} declares cameras {declared[0]} and state size {declared[1]}, "
                                   f"but this robot's are {self.cameras} and {self.state_dim}: one driver runs "
                                   "one embodiment")

    def _episode_limit(self, task: str, env) -> int:
        """Steps per episode: the caller's limit, else the env's registered one, else the default."""
        if self._max_steps is not None:
            return int(self._max_steps)
        spec = getattr(env, "spec", None)
        if spec is not None and spec.max_episode_steps:
            return int(spec.max_episode_steps)
        log.warning("task %r: the env sets no episode limit (env.spec.max_episode_steps); using %d steps "
                    "(set one with fleet robot --max-steps)", task, DEFAULT_MAX_STEPS)
        return DEFAULT_MAX_STEPS

    def _default_instruction(self, task: str) -> str:
        return getattr(self._env_for(task).unwrapped, "instruction", None) or task

    def _embodiment_from_observation(self, raw: Any) -> tuple[dict[str, tuple[int, int, int]], int]:
        where = f"task {self.task!r}, first observation"
        images, state = self._contract_parts(raw, where)
        if not images:
            raise EnvContractError(f"{where}: observation['images'] has no cameras; at least one is needed")
        for name, image in images.items():
            problem = _image_problem(image)
            if problem:
                raise EnvContractError(f"{where}: camera {name!r} image {problem}")
        return {name: tuple(int(v) for v in image.shape) for name, image in images.items()}, int(state.shape[0])

    @staticmethod
    def _contract_parts(raw: Any, where: str) -> tuple[Mapping, np.ndarray]:
        """(images, state) of an observation, after the checks that need no embodiment."""
        if not isinstance(raw, Mapping):
            raise EnvContractError(f"{where}: the observation is a {type(raw).__name__}; it must be a dict with "
                                   "'images' and 'state'")
        for key in ("images", "state"):
            if key not in raw:
                raise EnvContractError(f"{where}: the observation has no {key!r} key (it has {sorted(raw)})")
        images = raw["images"]
        if not isinstance(images, Mapping):
            raise EnvContractError(f"{where}: observation['images'] is a {type(images).__name__}; it must be a "
                                   "dict of camera name -> HxWx3 uint8 image")
        state = np.asarray(raw["state"])
        if state.ndim != 1 or not (np.issubdtype(state.dtype, np.floating) or np.issubdtype(state.dtype, np.integer)):
            raise EnvContractError(f"{where}: observation['state'] has shape {state.shape} and dtype {state.dtype}; "
                                   "it must be a 1-D numeric vector")
        return images, state

    def _accept(self, raw: Any, where: str) -> Observation:
        """Checks an observation against the contract and this robot's embodiment, and converts it."""
        images, state = self._contract_parts(raw, where)
        if images.keys() != self.cameras.keys():
            raise EnvContractError(f"{where}: cameras {sorted(images)}, expected {sorted(self.cameras)} (the camera "
                                   "set must not change)")
        for name, image in images.items():
            problem = _image_problem(image)
            if problem:
                raise EnvContractError(f"{where}: camera {name!r} image {problem}")
            if image.shape != self.cameras[name]:
                raise EnvContractError(f"{where}: camera {name!r} image has shape {image.shape}, expected "
                                       f"{self.cameras[name]} (image shapes must not change)")
        if state.shape != (self.state_dim,):
            raise EnvContractError(f"{where}: state has shape {state.shape}, expected ({self.state_dim},)")
        self.raw_observation = raw
        # Copies: the loop records this observation after the next env.step, and an env may
        # render into the same buffer every step.
        return Observation(images={name: np.array(image) for name, image in images.items()},
                           state=state.astype(np.float32))


class SimDriver(GymDriver):
    """The MuJoCo tasks from `sim` behind the Driver interface: `GymDriver` plus the sim's
    experts, its progress measure and its task registry."""

    robot_type = "sim_cartesian_arm"
    GRIPPER_DIM = 3  # sim action: (dx, dy, dz, gripper); the gripper is a position set-point
    jog_dims = (0, 1, 2)  # end-effector velocity along world x, y, z: a remote operator can jog it

    def __init__(self, tasks: list[str] | str, variant: str = "sim", image_size=96, max_steps: int | None = None,
                 shift: float | None = None):
        import sim  # imported here so a physical robot never needs MuJoCo

        self._sim = sim
        self.variant = variant
        # The real-proxy variant stands in for a physical robot: demonstrations and evaluation
        # only, never RL (it registers as a different robot type so the learner can tell).
        self.serves_rl = variant == "sim"
        self.robot_type = "sim_cartesian_arm" if variant == "sim" else "real_proxy_cartesian_arm"
        self._experts: dict = {}  # task -> its scripted expert, built once
        names = sim.check_tasks([tasks] if isinstance(tasks, str) else list(tasks))
        options = dict(image_size=image_size, max_steps=max_steps, variant=variant)
        if shift is not None:  # only real-proxy takes a shift
            options["shift"] = shift
        # Instructions from the task classes, so that listing them does not build every env.
        instructions = {name: getattr(sim.TASKS[name], "instruction", "") for name in names}
        super().__init__({name: functools.partial(sim.make, name, **options) for name in names},
                         {name: text for name, text in instructions.items() if text},
                         setpoint_action_dims=(self.GRIPPER_DIM,))

    def expert(self, observation: dict, env) -> np.ndarray:
        """The task's scripted expert (stateless: it reads privileged state from `env`)."""
        if self.task not in self._experts:
            self._experts[self.task] = self._sim.make_expert(env)
        return self._experts[self.task].act(env)

    def _episode_limit(self, task: str, env) -> int:
        return int(env.max_steps)  # sim envs truncate themselves at max_steps (task default or ours)


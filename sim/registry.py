"""Task registry: look tasks up by name."""

from __future__ import annotations

from typing import Callable

from sim.cued_button import CuedButtonEnv
from sim.pick_place import PickPlaceEnv
from sim.press_button import PressButtonEnv
from sim.push_cube import PushCubeEnv
from sim.reach import ReachEnv
from sim.tabletop_env import TabletopArmEnv

# name -> class (or any factory taking the env keyword arguments).
TASKS: dict[str, Callable[..., TabletopArmEnv]] = {
    env_class.task_name: env_class
    for env_class in (PushCubeEnv, ReachEnv, PickPlaceEnv, PressButtonEnv, CuedButtonEnv)
}


def register_task(name: str, factory: Callable[..., TabletopArmEnv]) -> None:
    if name in TASKS:
        raise ValueError(f"task {name!r} is already registered")
    TASKS[name] = factory


def make(task_name: str, **kwargs) -> TabletopArmEnv:
    """Build the env for `task_name`; kwargs go to the task constructor
    (image_size, max_steps, variant, shift)."""
    try:
        factory = TASKS[task_name]
    except KeyError:
        raise ValueError(f"unknown task {task_name!r}; known tasks: {sorted(TASKS)}") from None
    return factory(**kwargs)


def parse_tasks(spec: str) -> list[str]:
    """Task names from a command line: "push_cube", "push_cube,reach" or "all" (every registered
    task, in name order); an unknown name is a ValueError naming the known ones."""
    return check_tasks(sorted(TASKS) if spec.strip() == "all" else [n.strip() for n in spec.split(",") if n.strip()])


def check_tasks(names: list[str]) -> list[str]:
    """`names` without repeats, if every one is a registered task; else a ValueError naming the known ones."""
    names = list(dict.fromkeys(names))
    unknown = [name for name in names if name not in TASKS]
    if not names or unknown:
        raise ValueError(f"unknown sim task(s) {unknown}; known tasks: {sorted(TASKS)}" if unknown
                         else f"no sim task given; known tasks: {sorted(TASKS)}")
    return names


def make_rl_env(task_name: str, **kwargs) -> TabletopArmEnv:
    """Build an env for RL rollouts: the sim variant only (real-proxy stands in for a real robot)."""
    if kwargs.get("variant", "sim") != "sim":
        raise ValueError(f"RL rollouts run in simulation only; variant {kwargs['variant']!r} stands in "
                         "for a physical robot (demonstrations and evaluation only)")
    return make(task_name, **kwargs)


def make_expert(env, noise: float = 0.0, seed: int | None = None):
    """Scripted expert for whatever task `env` (or a wrapper around it) is."""
    return env.unwrapped.expert(noise=noise, seed=seed)

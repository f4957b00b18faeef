"""Where did a failed episode become a failure? Snapshots of a running env and expert recovery.

A failure detector is only useful if it fires before the episode is lost. The moment it is lost
is defined here as the first step from which the scripted expert, started from that exact state
with the steps the episode has left, no longer succeeds. `snapshot` copies everything an episode's
future depends on (MuJoCo's data and the env's own Python state: targets, step count, actions in
flight, noise generators, task randomisation); `restore` puts it back; `expert_recovers` replays
the expert from a snapshot without rendering (the experts read privileged state, not pixels).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mujoco

_SHARED = {"model", "data", "_renderer", "arm", "observation_space", "action_space", "_effects"}


@dataclass
class Snapshot:
    data: mujoco.MjData
    attributes: dict[str, Any]


def _copy(env, value):
    """A deep copy in which the env's model, data and renderer stay the env's own (task helpers
    such as a button or a free body hold references to them)."""
    shared = {id(env.model): env.model, id(env.data): env.data, id(env._renderer): env._renderer}
    return copy.deepcopy(value, memo=shared)


def snapshot(env) -> Snapshot:
    env = env.unwrapped
    attributes = {k: _copy(env, v) for k, v in vars(env).items() if k not in _SHARED}
    return Snapshot(copy.copy(env.data), attributes)


def restore(env, state: Snapshot) -> None:
    env = env.unwrapped
    mujoco.mj_copyData(env.data, env.model, state.data)
    for key, value in state.attributes.items():
        setattr(env, key, _copy(env, value))
    mujoco.mj_forward(env.model, env.data)


def expert_recovers(env, state: Snapshot, expert) -> bool:
    """Restores `state` and lets `expert` act until the episode's own step limit; True on success.
    Leaves the env in the state it reached (restore again to go on from elsewhere)."""
    restore(env, state)
    env = env.unwrapped
    env._observation = lambda: {}  # physics only (shadows the method): the expert never looks at pixels
    try:
        while env.step_count < env.max_steps:
            _, _, terminated, truncated, info = env.step(expert.act(env))
            if terminated:
                return bool(info["is_success"])
            if truncated:
                return False
        return False
    finally:
        del env._observation


def failure_step(env, states: Sequence[tuple[int, Snapshot]], expert, end: int) -> int:
    """The step at which a failed episode was lost: the earliest snapshot step after the last one
    from which `expert` still recovers (`end`, the episode's last step + 1, if it recovers from
    every one). `states` are (step, snapshot) pairs in time order, taken during the episode (e.g.
    at every chunk start). Scanning back from the end assumes that once lost, an episode stays lost."""
    lost = end
    for step, state in reversed(states):
        if expert_recovers(env, state, expert):
            break
        lost = step
    return lost

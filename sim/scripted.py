"""Scripted episodes: a task's expert run on one seed, recorded as the trainer's EpisodeArrays.

Benchmarks use these as demonstrations; `fleet pretrain` (learner/pretrain.py) as the broad
multi-task data a base policy learns from.
"""

from __future__ import annotations

import numpy as np

from core.episode import EpisodeArrays
from fleet.v1 import fleet_pb2 as pb
from sim.registry import make_expert


def expert_episode(env, seed: int, robot_id: str = "scripted") -> EpisodeArrays:
    """Runs `env`'s scripted expert from `env.reset(seed=seed)` to the episode's end; every step
    is recorded as an offline demonstration step (success or not: the episode says which)."""
    expert = make_expert(env)
    obs, _ = env.reset(seed=seed)
    steps = []  # (observation, action) pairs as a robot records them
    info = {"is_success": False}
    for _ in range(env.max_steps):
        action = expert.act(env)
        steps.append((obs, action))
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    arrays = {f"image/{name}": np.stack([o["images"][name] for o, _ in steps]) for name in env.camera_names}
    arrays.update(state=np.stack([o["state"] for o, _ in steps]),
                  action=np.stack([a for _, a in steps]).astype(np.float32),
                  source=np.full(len(steps), pb.ACTION_SOURCE_OFFLINE_DEMO, np.int8))
    return EpisodeArrays(robot_id, f"{env.unwrapped.task_name}-{seed}", env.unwrapped.task_name, env.instruction, "demonstration", -1,
                         bool(info["is_success"]), arrays)

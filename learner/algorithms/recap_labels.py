"""RECAP's advantage labels (pi*0.6; ALGORITHMS.md section 5): the arithmetic, on its own.

Per step t of an episode of length T:
    reward     r_t = -1 on every step; the last step of a success adds +1 (so it is 0), the last
               step of a failure adds `failure_penalty` (a large negative)
    return     G_t = sum_{k >= t} r_k (Monte-Carlo, undiscounted)
    normalised G_t / norm, with norm = the largest |G| of the task (the longest failure), so
               every task's returns lie in [-1, 0]
    advantage  A_t = (G_t - G_{t+n}) / norm + V(o_{t+n}) - V(o_t): the n-step return plus the
               value n steps on, minus the value now (V on the normalised scale; past the end,
               V = 0 and the sum stops at T)
    label      positive when A_t is at or above the task's `percentile` (70th: the top ~30%), and
               always for steps a human chose (corrections count as good actions)

The value function that gives V (distributional, per task) and the advantage-conditioned policy
are built on these; this module is the part that can be checked by hand.
"""

from __future__ import annotations

import numpy as np


def step_rewards(length: int, success: bool, failure_penalty: float = -100.0) -> np.ndarray:
    rewards = -np.ones(length, np.float64)
    rewards[-1] += 1.0 if success else failure_penalty
    return rewards


def returns_to_go(rewards: np.ndarray) -> np.ndarray:
    return np.cumsum(rewards[::-1])[::-1]


def task_norm(episode_returns: list[np.ndarray]) -> float:
    """The task's scale: the largest |return| over its episodes (at least 1)."""
    return max(1.0, max(float(np.max(np.abs(g))) for g in episode_returns))


def n_step_advantages(returns: np.ndarray, values: np.ndarray, norm: float, n: int) -> np.ndarray:
    """A_t = (G_t - G_{t+n}) / norm + V_{t+n} - V_t, with G and V zero past the episode's end."""
    length = len(returns)
    g = np.append(returns / norm, 0.0)
    v = np.append(np.asarray(values, np.float64), 0.0)
    ahead = np.minimum(np.arange(length) + n, length)
    return g[:length] - g[ahead] + v[ahead] - v[:length]


def binarise(advantages_by_episode: list[np.ndarray], human_by_episode: list[np.ndarray],
             percentile: float = 70.0) -> list[np.ndarray]:
    """Positive at or above the task's percentile of all its advantages, and on human steps."""
    threshold = np.percentile(np.concatenate(advantages_by_episode), percentile)
    return [(a >= threshold) | np.asarray(h, bool) for a, h in zip(advantages_by_episode, human_by_episode)]

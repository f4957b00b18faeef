"""When a robot asks for a human: the simple rule FLOAT replaces later.

In simulation the scripted expert is available, so the rule is the one Fleet-DAgger-style
benchmarks use as a stand-in for a risk estimate: the policy's actions disagree with the
expert's for a sustained window, or the task makes no progress for `no_progress_steps`.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np


@dataclass
class HelpRuleConfig:
    window: int = 4                 # steps averaged for the disagreement score
    disagreement: float = 0.9       # mean L2 distance (action units in [-1, 1]) that fires
    no_progress_steps: int = 30     # steps without the task distance improving by `progress_m`
    progress_m: float = 0.01
    cooldown_steps: int = 10        # quiet period after a takeover ends


class HelpRule:
    def __init__(self, config: HelpRuleConfig | None = None):
        self.config = config or HelpRuleConfig()
        self.reset()

    def reset(self) -> None:
        self.distances: collections.deque[float] = collections.deque(maxlen=self.config.window)
        self.best_progress = np.inf
        self.steps_since_progress = 0
        self.cooldown = 0

    def after_takeover(self) -> None:
        self.distances.clear()
        self.steps_since_progress = 0
        self.cooldown = self.config.cooldown_steps

    def update(self, policy_action: np.ndarray, expert_action: np.ndarray, task_distance: float | None
               ) -> tuple[str, float] | None:
        """Feeds one autonomous step; returns (reason, score) when help should be requested."""
        c = self.config
        self.distances.append(float(np.linalg.norm(policy_action[:3] - expert_action[:3])))
        if task_distance is not None:
            if task_distance < self.best_progress - c.progress_m:
                self.best_progress = task_distance
                self.steps_since_progress = 0
            else:
                self.steps_since_progress += 1
        if self.cooldown > 0:
            self.cooldown -= 1
            return None
        score = float(np.mean(self.distances))
        if len(self.distances) == c.window and score > c.disagreement:
            return "action_disagreement", score
        if self.steps_since_progress >= c.no_progress_steps:
            return "no_progress", float(self.steps_since_progress)
        return None

"""Running a policy on a robot: receding-horizon execution of sampled action chunks.

The policy samples `horizon` action tokens at once; the robot executes `n_action_steps` of them,
starting at the current step's token (after the past tokens of a long-context policy), and then
samples again from the newest observation. The robot loop, benchmarks and
evaluation scripts all run a policy through this one class, so they behave the same.
"""

from __future__ import annotations

import numpy as np
import torch

from policy.vla import VLAPolicy


class PolicyRunner:
    def __init__(self, policy: VLAPolicy, seed: int = 0):
        self.policy = policy
        self.plan: list[np.ndarray] = []
        self.generator = torch.Generator()
        self.reset(seed)

    def reset(self, seed: int) -> None:
        """Starts an episode: forgets the plan and reseeds the sampler (same seed, same actions)."""
        self.plan = []
        self.generator.manual_seed(seed % (2**31))

    def replan(self) -> None:
        """Drops the rest of the current chunk (e.g. after an operator moved the arm)."""
        self.plan = []

    def act(self, images: dict[str, np.ndarray], state: np.ndarray, instruction: str) -> np.ndarray:
        if not self.plan:
            batch = self.policy.observation_batch(images, state, instruction)
            chunk = self.policy.predict_action_chunk(batch, self.generator)[0]
            config = self.policy.config
            self.plan = list(chunk[config.past_tokens:config.past_tokens + config.n_action_steps])
        return np.clip(self.plan.pop(0), -1.0, 1.0).astype(np.float32)

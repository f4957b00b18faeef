"""The algorithm plug-in interface."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from core.episode import EpisodeArrays
from policy import VLAPolicy


class Algorithm(Protocol):
    name: str

    def wants_episode(self, kind: str, success: bool, human_steps: int) -> bool:
        """Whether the trainer should load this stored episode at all (cheap, index-only)."""

    def step_labels(self, episode: EpisodeArrays) -> np.ndarray:
        """Bool per step: may this step's executed action be a training label?"""

    def loss(self, policy: VLAPolicy, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss to minimise on one sampled batch, plus named figures to log ("denoise_loss" among them)."""


# Optional, where an algorithm needs them (RECAP does; the trainer checks with getattr):
#   policy_overrides: dict              PolicyConfig fields the algorithm's policy must have
#   extra_parameters(policy) -> list    more trainable parameters for the trainer's optimizer
#   relabel(index, policy, cached)      recompute per-step labels once data or models moved;
#                                       returns named figures to log
#   artifacts() / restore(artifacts, policy)
#                                       state saved with each version and read back on resume

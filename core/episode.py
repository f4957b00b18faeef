"""One complete stored episode, as both sides hand it around (the trainer, FLOAT, benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class EpisodeArrays:
    """One complete stored episode, every array with a leading step axis."""

    robot_id: str
    episode_id: str
    task: str
    instruction: str
    kind: str
    policy_version: int
    success: bool
    arrays: dict[str, np.ndarray]

    @property
    def num_steps(self) -> int:
        return len(self.arrays["action"])

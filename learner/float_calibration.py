"""What each published version ships for FLOAT (ALGORITHMS.md section 3), in its own embedding
space: a new encoder means a new space, so every version carries its own.

  reference bank   the offline demonstrations, one embedding per executed chunk
  calibration      the final FLOAT index of each of the recent successful rollouts no operator
                   touched, per task (monitor/calibration.py); robots turn them into tau with
                   the fleet's percentile
"""

from __future__ import annotations

import collections
from typing import Callable

from core.episode import EpisodeArrays
from monitor.calibration import calibration_indices
from monitor.features import build_reference_bank, episode_features
from monitor.float_detector import ReferenceBank
from policy import VLAPolicy

CALIBRATION_ROLLOUTS = 30  # untouched successes kept per task


class FloatCalibration:
    def __init__(self, keep: int = CALIBRATION_ROLLOUTS):
        # Index rows only: the episodes are loaded again at publish time, when they are needed.
        self.untouched_successes: dict[str, collections.deque] = collections.defaultdict(
            lambda: collections.deque(maxlen=keep))

    def observe(self, row) -> None:
        """Keeps a completed episode's row if it is a success no operator touched."""
        if row["kind"] in ("training", "evaluation") and row["success"] and not row["human_steps"]:
            self.untouched_successes[row["task"]].append(row)

    def for_version(self, policy: VLAPolicy, demonstrations: list[EpisodeArrays],
                    load_episode: Callable) -> tuple[ReferenceBank, dict[str, dict]]:
        """(reference bank, calibration) for the weights robots will run."""
        bank = build_reference_bank(policy, demonstrations)
        successes = {task: [episode_features(policy, load_episode(row)) for row in rows]
                     for task, rows in self.untouched_successes.items()}
        return bank, calibration_indices(bank, successes)

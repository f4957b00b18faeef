"""FLOAT's threshold across the fleet: who computes what, and when.

tau for a task is the p-th percentile of the final FLOAT index over successful rollouts of that
task. The two halves change at different times and live in different places:

- The successes' final indices depend on the encoder, so they change with every policy version.
  The trainer computes them when it publishes (`calibration_indices`): the final index of recent
  successful, untouched rollouts of the task, re-embedded with the new weights; while a task has
  fewer than `MIN_ROLLOUTS` of those (version 0 has none), each demonstration's final index
  against the other demonstrations stands in. They ship in the checkpoint's meta, with the bank.
- p moves with operator feedback (false alarm: +5; missed failure: -5), whatever the version.
  The learner's control plane keeps it per task (`PercentileBook`, persisted) and tells every
  robot; a robot computes tau = percentile(indices of the version it runs, p), so a threshold
  and the version it belongs to can never be mixed up.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from core.durable import atomic_write_text
from monitor.float_detector import FloatDetector, ReferenceBank, ThresholdCalibrator

log = logging.getLogger("fleetlearn.float")

MIN_ROLLOUTS = 5
DEFAULT_PERCENTILE = 95.0


def leave_one_out_indices(bank: ReferenceBank) -> list[float]:
    """Each demonstration's final index against the others (a success by construction)."""
    if len(bank.sequences) < 2:
        return []
    indices = []
    for i in range(len(bank.sequences)):
        others = np.arange(len(bank.sequences)) != i
        rest = ReferenceBank(bank.sequences[others], bank.lengths[others])
        indices.append(FloatDetector(rest).final_index(bank.sequences[i, :bank.lengths[i]]))
    return indices


def calibration_indices(bank: ReferenceBank, successes: dict[str, list[np.ndarray]]) -> dict[str, dict]:
    """task -> {"indices": final indices of successful rollouts, "source": where they came from}
    for every task of the bank; `successes` holds per-chunk features of successful rollouts."""
    result = {}
    for task in sorted(set(bank.tasks)) or [""]:
        task_bank = bank.for_task(task or None)
        rollouts = successes.get(task, [])
        if len(rollouts) >= MIN_ROLLOUTS:
            detector = FloatDetector(task_bank)
            result[task] = {"indices": [round(detector.final_index(f), 5) for f in rollouts],
                            "source": f"{len(rollouts)} successful rollouts"}
        else:
            result[task] = {"indices": [round(v, 5) for v in leave_one_out_indices(task_bank)],
                            "source": f"{len(task_bank.sequences)} demonstrations, leave one out"}
    return result


class PercentileBook:
    """p per task, moved by operator feedback and kept across restarts in `path` (JSON)."""

    def __init__(self, path: Path | None = None, percentile: float = DEFAULT_PERCENTILE):
        self.path = path
        self.default = percentile
        self.percentiles: dict[str, float] = {}
        if path is not None and path.exists():
            self.percentiles = {str(k): float(v) for k, v in json.loads(path.read_text()).items()}

    def get(self, task: str) -> float:
        return self.percentiles.get(task, self.default)

    def feedback(self, task: str, fired: bool, continued: bool, success: bool) -> float | None:
        """One finished episode that FLOAT watched; returns the task's new p if it changed.
        False positive: fired, an operator said continue, and the episode succeeded (p + 5).
        False negative: the episode failed and FLOAT never fired (p - 5)."""
        calibrator = ThresholdCalibrator(percentile=self.get(task))
        if fired and continued and success:
            calibrator.false_positive()
        elif not fired and not success:
            calibrator.false_negative()
        else:
            return None
        if calibrator.percentile == self.get(task):
            return None  # already at the bound
        self.percentiles[task] = calibrator.percentile
        if self.path is not None:  # whole or not at all: scaled-out replicas share the directory
            atomic_write_text(self.path, json.dumps(self.percentiles, indent=1))
        log.info("FLOAT percentile for %s -> %.0f (%s)", task, calibrator.percentile,
                 "false alarm" if success else "missed failure")
        return calibrator.percentile


def threshold(indices: list[float], percentile: float) -> float:
    return ThresholdCalibrator(percentile=percentile, successes=list(indices)).tau

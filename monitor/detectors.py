"""Failure detectors behind one interface, and how to score them.

Every detector sees one `ChunkSignals` per executed action chunk and keeps a running episode
score; it fires when the score exceeds its threshold `tau`:

    detector.reset()                      # episode start
    score = detector.update(signals)      # once per chunk; fired = score > detector.tau

FLOAT (monitor.float_detector) is one; the two baselines here are the usual alternatives:

ActionVarianceDetector  the policy's own uncertainty: the variance, across S diffusion samples for
                        the same observation, of the predicted action chunk (normalised units,
                        mean over tokens and dimensions). Episode score: the largest so far.
NearestDemoDetector     distance in the policy's embedding space without transport: the cosine
                        distance from the current window embedding to the closest demonstration
                        chunk of the task, anywhere in any demo. Episode score: the largest so far.

The scoring helpers (balanced accuracy, AUROC, a threshold chosen on a calibration split) are the
ones `fleet bench float` applies to every detector alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from monitor.float_detector import ReferenceBank, cosine_cost


@dataclass
class ChunkSignals:
    feature: np.ndarray                       # the policy's flattened observation-window embedding
    action_samples: np.ndarray | None = None  # (S, horizon, action_dim) sampled chunks, normalised


class Detector(Protocol):
    name: str
    tau: float
    needs_action_samples: bool

    def reset(self) -> None: ...

    def update(self, signals: ChunkSignals) -> float: ...


@dataclass
class ActionVarianceDetector:
    tau: float = float("inf")
    name: str = "action_variance"
    needs_action_samples = True
    index: float = 0.0

    def reset(self) -> None:
        self.index = 0.0

    def update(self, signals: ChunkSignals) -> float:
        if signals.action_samples is None:
            raise ValueError("the action-variance detector needs sampled action chunks")
        variance = float(np.asarray(signals.action_samples, np.float64).var(axis=0).mean())
        self.index = max(self.index, variance)
        return self.index


@dataclass
class NearestDemoDetector:
    bank: ReferenceBank | None
    tau: float = float("inf")
    name: str = "nearest_demo"
    needs_action_samples = False
    index: float = 0.0

    def __post_init__(self):
        # Every real (unpadded) chunk of every demonstration, as one matrix.
        if self.bank is not None:
            self._frames = np.concatenate([s[:n] for s, n in zip(self.bank.sequences, self.bank.lengths)])

    def reset(self) -> None:
        self.index = 0.0

    def update(self, signals: ChunkSignals) -> float:
        if self.bank is None:
            return self.index
        feature = np.asarray(signals.feature, np.float64).ravel()
        self.index = max(self.index, float(cosine_cost(feature[None], self._frames).min()))
        return self.index


# -- scoring ------------------------------------------------------------------------------------

def balanced_accuracy(fired: np.ndarray, failed: np.ndarray) -> float:
    """Mean of the detection rate on failures and the quiet rate on successes."""
    fired, failed = np.asarray(fired, bool), np.asarray(failed, bool)
    if failed.all() or not failed.any():
        raise ValueError("balanced accuracy needs both failures and successes")
    return 0.5 * (fired[failed].mean() + (~fired[~failed]).mean())


def auroc(scores: np.ndarray, failed: np.ndarray) -> float:
    """Probability that a random failure scores above a random success (ties count half)."""
    scores, failed = np.asarray(scores, np.float64), np.asarray(failed, bool)
    positive, negative = scores[failed], scores[~failed]
    if not len(positive) or not len(negative):
        raise ValueError("AUROC needs both failures and successes")
    greater = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(greater + 0.5 * ties)


def threshold_candidates(scores: np.ndarray) -> np.ndarray:
    """Every distinct way to split `scores` with "fire when score > tau": the midpoints between
    neighbouring values (so no threshold sits on a calibration sample), plus below all and above all."""
    values = np.unique(np.asarray(scores, np.float64))
    return np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2, [values[-1] + 1.0]])


def best_threshold(scores: np.ndarray, failed: np.ndarray) -> float:
    """The threshold (fire when score > it) with the best balanced accuracy on a calibration split."""
    scores = np.asarray(scores, np.float64)
    candidates = threshold_candidates(scores)
    accuracy = [balanced_accuracy(scores > c, failed) for c in candidates]
    return float(candidates[int(np.argmax(accuracy))])

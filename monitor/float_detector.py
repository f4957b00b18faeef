"""FLOAT: failure detection by optimal transport against expert demonstrations (ALGORITHMS.md §3).

Features are the policy's own observation embeddings, one per executed action chunk. The
reference bank holds the embedding sequences of the expert demonstrations, padded to the longest
one by repeating each demonstration's last embedding (a finished demo stays where it ended).

At episode start the K demos closest to the first rollout embedding are kept as candidates. At
each chunk every candidate is scored by the entropic OT cost between it and the rollout prefix,
the prefix padded with zero-cost columns for the steps still to come (so a prefix is matched to
the part of a demo it has reached, not to the whole demo). The best candidate's per-step
transported cost, summed over the prefix, is the FLOAT index F(t); F(t) > tau asks for help.

Sinkhorn runs in the log domain, batched over candidates, so one chunk costs one small tensor
computation (tests compare it with a hand-computed case and with POT).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

EPSILON = 0.1
SINKHORN_ITERATIONS = 200
SINKHORN_TOLERANCE = 1e-6
CANDIDATES = 50


def cosine_cost(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - cos(a_i, b_j) for a (..., n, d) and b (..., m, d) -> (..., n, m)."""
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return 1.0 - a @ np.swapaxes(b, -1, -2)


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.sum(np.exp(x - top), axis=axis))


def sinkhorn(cost: np.ndarray, a: np.ndarray, b: np.ndarray, epsilon: float = EPSILON,
             iterations: int = SINKHORN_ITERATIONS, tolerance: float = SINKHORN_TOLERANCE) -> np.ndarray:
    """Entropic OT plan(s) for cost (..., n, m) between marginals a (..., n) and b (..., m).
    Stops early once every row sum is within `tolerance` (relative) of its marginal (checked
    every 10 iterations; the column sums are exact after each update)."""
    log_k = -cost / epsilon
    log_a, log_b = np.log(a), np.log(b)
    f = np.zeros(cost.shape[:-1])
    g = np.zeros(cost.shape[:-2] + cost.shape[-1:])
    for i in range(iterations):
        f = log_a - _logsumexp(log_k + g[..., None, :], axis=-1)
        g = log_b - _logsumexp(log_k + f[..., :, None], axis=-2)
        if tolerance > 0 and i % 10 == 9:
            row_error = np.expm1(f + _logsumexp(log_k + g[..., None, :], axis=-1) - log_a)
            if np.max(np.abs(row_error)) < tolerance:
                break
    return np.exp(log_k + f[..., :, None] + g[..., None, :])


@dataclass
class ReferenceBank:
    """Expert demonstrations' embedding sequences (one embedding per chunk), padded to one length,
    each labelled with its task (a rollout is only compared with demonstrations of its own task)."""

    sequences: np.ndarray  # (demos, length, dim)
    lengths: np.ndarray    # (demos,) chunks before padding
    tasks: tuple[str, ...] = ()  # (demos,) task names; empty: one unnamed task

    @classmethod
    def from_sequences(cls, sequences: list[np.ndarray], tasks: list[str] | None = None) -> "ReferenceBank":
        if not sequences:
            raise ValueError("a reference bank needs at least one demonstration")
        if tasks is not None and len(tasks) != len(sequences):
            raise ValueError(f"{len(tasks)} task names for {len(sequences)} demonstrations")
        length = max(len(s) for s in sequences)
        padded = np.stack([np.concatenate([s, np.repeat(s[-1:], length - len(s), axis=0)]) for s in sequences])
        return cls(padded.astype(np.float64), np.array([len(s) for s in sequences]), tuple(tasks or ()))

    def for_task(self, task: str | None) -> "ReferenceBank | None":
        """The demonstrations of `task` (all of them for an unlabelled bank); None if it has none."""
        if not self.tasks or task is None:
            return self
        keep = np.array([t == task for t in self.tasks])
        if not keep.any():
            return None
        return ReferenceBank(self.sequences[keep], self.lengths[keep], tuple(t for t in self.tasks if t == task))

    def as_arrays(self) -> dict[str, np.ndarray]:
        """For shipping inside a checkpoint (artifacts are safetensors). float16 halves what every
        robot downloads per version; cosine costs do not notice. Task names travel as UTF-8 bytes."""
        names = "\n".join(self.tasks).encode()
        return {"sequences": self.sequences.astype(np.float16), "lengths": self.lengths.astype(np.int64),
                "tasks": np.frombuffer(names, np.uint8).copy()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "ReferenceBank":
        sequences = np.asarray(arrays["sequences"])
        lengths = np.asarray(arrays["lengths"])
        if sequences.ndim != 3 or lengths.shape != sequences.shape[:1]:
            raise ValueError(f"malformed FLOAT bank: sequences {sequences.shape}, lengths {lengths.shape}")
        names = bytes(np.asarray(arrays.get("tasks", np.zeros(0, np.uint8)), np.uint8)).decode()
        tasks = tuple(names.split("\n")) if names else ()
        if tasks and len(tasks) != len(sequences):
            raise ValueError(f"malformed FLOAT bank: {len(tasks)} task names for {len(sequences)} demonstrations")
        return cls(sequences.astype(np.float64), lengths, tasks)


def prefix_costs(demos: np.ndarray, prefix: np.ndarray, epsilon: float = EPSILON) -> tuple[np.ndarray, np.ndarray]:
    """OT of a rollout prefix (n, d) against each demo (K, L, d), the prefix padded with L - n
    zero-cost future columns. Returns (total transported cost over the prefix per demo (K,),
    per-step transported cost of the prefix per demo (K, n))."""
    k, length, _ = demos.shape
    n = len(prefix)
    columns = max(length, n)
    cost = np.zeros((k, length, columns))
    cost[:, :, :n] = cosine_cost(demos, prefix[None])
    a = np.full((k, length), 1.0 / length)
    b = np.full((k, columns), 1.0 / columns)
    plan = sinkhorn(cost, a, b, epsilon)
    per_step = (plan * cost).sum(axis=1)[:, :n]
    return per_step.sum(axis=1), per_step


@dataclass
class FloatDetector:
    """One rollout at a time: `reset()`, then `update(signals)` once per executed chunk (the
    detector interface of monitor.detectors). The first update keeps the K demos whose sequences
    come closest (cosine) to the first rollout embedding."""

    bank: ReferenceBank | None  # this task's demonstrations; None: nothing to compare with, never fires
    tau: float = float("inf")
    candidates: int = CANDIDATES
    epsilon: float = EPSILON
    name: str = "float"
    needs_action_samples = False
    _candidates: np.ndarray | None = field(default=None, repr=False)
    _prefix: list[np.ndarray] = field(default_factory=list, repr=False)
    index: float = 0.0

    def reset(self) -> None:
        self._candidates = None
        self._prefix = []
        self.index = 0.0

    def update(self, signals) -> float:
        """Adds the latest chunk's embedding (`signals.feature`); returns the FLOAT index F(t)."""
        if self.bank is None:
            return self.index
        embedding = np.asarray(signals.feature, np.float64).ravel()
        if self._candidates is None:
            self._candidates = self._preselect(embedding)
        self._prefix.append(embedding)
        totals, _ = prefix_costs(self.bank.sequences[self._candidates], np.stack(self._prefix), self.epsilon)
        self.index = float(totals.min())
        return self.index

    def _preselect(self, first: np.ndarray) -> np.ndarray:
        nearest = cosine_cost(self.bank.sequences, first[None, None]).min(axis=(1, 2))
        return np.argsort(nearest, kind="stable")[:self.candidates]

    def final_index(self, features: np.ndarray) -> float:
        """The index a rollout with these per-chunk `features` ends with, in one OT solve instead of
        one per chunk (calibration). Leaves the detector's running state alone."""
        if self.bank is None:
            return 0.0
        features = np.asarray(features, np.float64).reshape(len(features), -1)
        totals, _ = prefix_costs(self.bank.sequences[self._preselect(features[0])], features, self.epsilon)
        return float(totals.min())


@dataclass
class ThresholdCalibrator:
    """tau = p-th percentile of the final FLOAT index over successful rollouts, per task; p moves
    by 5 on operator feedback (false positive: up, to at most 100; false negative: down, to at least 0)."""

    percentile: float = 95.0
    step: float = 5.0
    successes: list[float] = field(default_factory=list)

    @property
    def tau(self) -> float:
        if not self.successes:
            return float("inf")  # nothing to compare with yet: never fire
        return float(np.percentile(self.successes, self.percentile))

    def add_success(self, final_index: float) -> None:
        self.successes.append(float(final_index))

    def false_positive(self) -> float:
        """Fired, the operator said continue, and the episode succeeded."""
        self.percentile = min(self.percentile + self.step, 100.0)
        return self.tau

    def false_negative(self) -> float:
        """The episode failed and FLOAT never fired."""
        self.percentile = max(self.percentile - self.step, 0.0)
        return self.tau

"""FLOAT on the robot: one background worker, a detector per episode, the threshold in force.

The policy version a robot runs ships FLOAT's reference bank (artifact `float_bank`) and the final
indices of successful rollouts per task (meta info "float"); the learner tells the robot the
percentile p per task (SetFloatThreshold) whenever operator feedback moves it. tau is the p-th
percentile of the running version's indices, so it always matches the bank in use.

The control loop calls `observe` at each chunk start with the policy's observation window; the
embedding is the policy's own (computed on the loop thread, a few milliseconds), the optimal
transport runs on the worker thread, and `index` / `fired` are read without waiting.
"""

from __future__ import annotations

import logging

import numpy as np

from fleet.v1 import fleet_pb2 as pb
from monitor.calibration import DEFAULT_PERCENTILE, threshold
from monitor.detectors import ChunkSignals
from monitor.features import CHUNK_STEPS, window_feature
from monitor.float_detector import FloatDetector, ReferenceBank
from monitor.worker import FloatWorker

log = logging.getLogger("fleetlearn.robot")


class RobotMonitor:
    def __init__(self):
        self.worker: FloatWorker | None = None
        self.bank: ReferenceBank | None = None
        self.indices: dict[str, list[float]] = {}
        self.percentiles: dict[str, float] = {}
        self.tau = float("inf")
        self.task = ""
        self.running = False
        self.fired_at: float | None = None  # index when the current alarm was raised
        self.continued = False
        self.ever_fired = False
        self._dropped_before = 0
        self.quiet_until = 0

    def load(self, checkpoint) -> None:
        """Takes the bank and calibration of a newly swapped-in version (none: FLOAT stays off)."""
        arrays = checkpoint.artifacts.get("float_bank")
        self.bank = ReferenceBank.from_arrays(arrays) if arrays is not None else None
        calibration = checkpoint.meta.get("info", {}).get("float", {})
        self.indices = {task: list(entry["indices"]) for task, entry in calibration.items()}
        if self.bank is None:
            log.warning("policy version %d ships no FLOAT bank: failure detection is off", checkpoint.version)

    def set_percentile(self, task: str, percentile: float) -> None:
        self.percentiles[task] = float(percentile)
        if task == self.task:
            self.tau = self._tau(task)

    def _tau(self, task: str) -> float:
        return threshold(self.indices.get(task, []), self.percentiles.get(task, DEFAULT_PERCENTILE))

    @property
    def percentile(self) -> float:
        return self.percentiles.get(self.task, DEFAULT_PERCENTILE)

    def start_episode(self, task: str, watch: bool) -> None:
        """A new episode; `watch` False (demonstrations, evaluations, no bank) keeps FLOAT quiet."""
        self.task, self.fired_at, self.continued, self.ever_fired = task, None, False, False
        self.quiet_until = 0
        task_bank = self.bank.for_task(task) if self.bank is not None else None
        self.running = watch and task_bank is not None
        if not self.running:
            return
        self.tau = self._tau(task)
        detector = FloatDetector(task_bank, tau=self.tau)
        if self.worker is None:
            self.worker = FloatWorker(detector)
        self.worker.start_episode(detector)
        self._dropped_before = self.worker.dropped

    def restart(self, step: int) -> None:
        """After an operator answered (took over, or said continue): a fresh prefix from here, and
        no new alarm for one chunk, so the robot acts on its own for a while between two takeovers
        (and the learner, which counts takeovers as switches to a human, counts both)."""
        if self.running:
            self.worker.start_episode()
            self.fired_at = None
            self.quiet_until = step + CHUNK_STEPS

    def observe(self, step: int, runner, images: dict, state: np.ndarray) -> None:
        """At every chunk start: hands the policy's observation window to the worker (never waits)."""
        if self.running and step % CHUNK_STEPS == 0:
            window = runner.window(images, state)
            self.worker.submit(ChunkSignals(window_feature(window[0].cpu().numpy())))

    @property
    def index(self) -> float:
        return self.worker.index if self.running else 0.0

    def alarm(self, step: int) -> bool:
        """True once per crossing: the index is above tau and no alarm is open."""
        if not self.running or self.fired_at is not None or step < self.quiet_until or not self.index > self.tau:
            return False
        self.fired_at = self.index
        self.ever_fired = True
        return True

    def summary(self) -> pb.FloatSummary:
        if not self.running:
            return pb.FloatSummary(ran=False)
        self.worker.drain(timeout=1.0)  # the last chunk's score, if it is still being computed
        return pb.FloatSummary(ran=True, final_index=self.index, fired=self.ever_fired,
                               operator_continued=self.continued, threshold=self.tau,
                               percentile=self.percentile,
                               dropped_chunks=self.worker.dropped - self._dropped_before)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()

"""What `fleet bench scaling` watches in a running fleet: the CPU seconds of each role's processes
(read from /proc while they live), and an out-of-fleet evaluator that runs each new version once
on the same fixed seeds in pool workers."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from bench.sim import EVAL_SEED_BASE, _env, _policy_rollout

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- processes and their CPU time ----------------------------------------------------------------

def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    return found


class CpuMeter:
    """Cumulative CPU seconds per role, sampled while the processes live (they are gone at the end)."""

    def __init__(self):
        self.seconds: dict[str, dict[int, float]] = {}

    def sample(self, role: str, pids: list[int]) -> None:
        seen = self.seconds.setdefault(role, {})
        for pid in pids:
            seen[pid] = max(seen.get(pid, 0.0), _cpu_seconds(pid))

    def total(self, role: str) -> float:
        return sum(self.seconds.get(role, {}).values())


# -- evaluation, in pool workers -------------------------------------------------------------------

def _eval_job(job) -> tuple[str, bool, float]:
    task, seed, checkpoint_dir = job
    started = time.time()
    info = _policy_rollout(_env(task, "sim", None), seed, checkpoint_dir)
    return task, bool(info["is_success"]), time.time() - started


class Evaluator:
    """Each version once, on the same seeds; the newest waiting version first."""

    def __init__(self, pool, tasks: tuple[str, ...], seeds: int):
        self.pool, self.tasks, self.seeds = pool, tasks, seeds
        self.pending = None  # (version, AsyncResult)
        self.results: dict[int, float] = {}
        self.per_task: dict[int, dict[str, float]] = {}
        self.busy_s = 0.0

    def submit(self, version: int, checkpoint_dir: Path) -> None:
        jobs = [(task, EVAL_SEED_BASE + i, str(checkpoint_dir)) for i in range(self.seeds) for task in self.tasks]
        self.pending = (version, self.pool.map_async(_eval_job, jobs))

    def collect(self) -> int | None:
        """The version whose evaluation just finished, if one did."""
        if self.pending is None or not self.pending[1].ready():
            return None
        version, result = self.pending
        self.pending = None
        outcomes = result.get()
        self.busy_s += sum(seconds for _, _, seconds in outcomes)
        self.results[version] = float(np.mean([ok for _, ok, _ in outcomes]))
        self.per_task[version] = {t: float(np.mean([ok for task, ok, _ in outcomes if task == t])) for t in self.tasks}
        return version

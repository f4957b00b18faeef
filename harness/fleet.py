"""A whole fleet on one machine: a `fleet learner` (trainer and simulated operators included) and N
`fleet robot --sim` processes, talking gRPC over loopback as they would across machines, run for a
fixed time and summarised from the learner's store. The demo and the FLOAT benchmark's fleet arms
are such runs."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.learner import LearnerProcess
from harness.processes import free_port, single_thread_env, spawn_robot, stop_fleet
from learner.canary import DEFAULT_GUARD, verdicts
from learner.metrics import format_table, version_table
from learner.store import StoreReader
from robot_client.config import RobotConfig

# Seconds one episode takes on average at 10 Hz (for the evaluation cadence below).
MEAN_EPISODE_S = 4.5
POLL_S = 15.0  # how often the store is read for progress


@dataclass
class FleetConfig:
    minutes: float = 15.0
    robots: int = 4
    operators: int = 2
    out: Path = Path("runs/demo")
    tasks: tuple[str, ...] = ("push_cube",)
    # A Gymnasium env instead of sim tasks (MODULE:FACTORY, README "Bring your own environment"),
    # with its expert (it records the demonstrations and plays the operators); its task is tasks[0].
    env: str | None = None
    expert: str | None = None
    demos: int = 12  # per task
    eval_seeds: int | None = None  # per task; default 30 for one task, 20 each for several
    policy: str = "default"  # or "ptp": long context, trained in stages (learner/trainer.py)
    base: str = "default"  # where version 0 starts: the shipped base, "none" (scratch) or a checkpoint dir
    help_gate: str = "float"  # when robots ask for help: "float", "rule" (the sim's fixed rule) or "off"
    dashboard_port: int = 8080  # the operator dashboard (a free port when this one is taken; -1: none)

    @property
    def seeds_per_task(self) -> int:
        return self.eval_seeds or (30 if len(self.tasks) == 1 else 20)

    @property
    def eval_episodes(self) -> int:
        """Evaluation episodes per policy version, the whole fleet together."""
        return self.seeds_per_task * len(self.tasks)

    @property
    def publish_every_s(self) -> float:
        """About one evaluation round of the fleet: each robot runs its share of the evaluation
        episodes interleaved with as many training episodes, so every version is fully measured."""
        return max(90.0, 2 * -(-self.eval_episodes // self.robots) * MEAN_EPISODE_S)

    @property
    def final_eval_s(self) -> float:
        """No version is published this close to the deadline, so the last one finishes its round."""
        return self.publish_every_s + 40.0 + self.canary_s

    @property
    def canary_s(self) -> float:
        """About how long the learner's default canary holds a version on its first robots before
        the rest get it (their share of the paired evaluation seeds, every other episode)."""
        return DEFAULT_GUARD.hold_episodes(self.robots, RobotConfig.eval_every) * MEAN_EPISODE_S

    @property
    def driver_flags(self) -> list[str]:
        """The robots' driver: the sim tasks (spawn_robot's default), or the config's Gymnasium env."""
        if self.env is None:
            return []
        return ["--env", self.env, "--task", self.tasks[0], *(["--expert", self.expert] if self.expert else [])]

    @property
    def head_updates(self) -> int:
        """With --policy ptp, stage 3 of version 0: the long-context head on cached embeddings
        (warm-started from stage 1's head, so fewer updates than stage 1)."""
        return 1000 if len(self.tasks) == 1 else 2000

    @property
    def bootstrap_updates(self) -> int:
        """Version 0 trains to convergence: about 1500 updates for one task, 3000 for a suite."""
        return 1500 if len(self.tasks) == 1 else 3000

    @property
    def demos_per_robot(self) -> int:
        return -(-self.demos * len(self.tasks) // self.robots)


@dataclass
class FleetProgress:
    elapsed_s: float
    demonstrations: int  # complete demonstrations in the store
    table: list[dict]    # learner.metrics.version_table: one row per policy version


def print_progress(config: FleetConfig, progress: FleetProgress) -> None:
    """The live view: demonstrations stored, then a table per policy version."""
    print(f"\n[{progress.elapsed_s / 60:5.1f} / {config.minutes:g} min] demonstrations stored: "
          f"{progress.demonstrations}", flush=True)
    if progress.table:
        print(format_table(progress.table), flush=True)
    else:
        print("training version 0 on the demonstrations...", flush=True)


Report = Callable[[FleetConfig, FleetProgress], None]
Alarm = tuple[float, Callable[[], None]]  # (seconds after the start, action)


class FleetRun:
    """One run in `config.out`: tokens and ports on construction, processes on start(), progress
    while it lasts, DIR/summary.json at the end. A directory that already holds a run is refused."""

    def __init__(self, config: FleetConfig):
        self.config = config
        self.out = Path(config.out)
        if (self.out / "learner").exists():
            sys.exit(f"{self.out} already holds a run; pass --out to a new directory")
        self.logs = self.out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.token_file = self.out / "tokens.txt"
        self.token_file.write_text(secrets.token_hex(16) + "\n")
        self.operator_token = secrets.token_urlsafe(24)
        (self.out / "operators.txt").write_text(f"operator {self.operator_token}\n")
        self.port = free_port()
        self.dashboard_port = free_port(config.dashboard_port) if config.dashboard_port >= 0 else -1
        self.db_path = self.out / "learner" / "index.sqlite"
        self.learner: LearnerProcess | None = None
        self.robots: list[subprocess.Popen] = []

    @property
    def dashboard_url(self) -> str | None:
        """The operator dashboard, logged in with this run's operator token."""
        if self.dashboard_port < 0:
            return None
        return f"http://127.0.0.1:{self.dashboard_port}/?token={self.operator_token}"

    def start(self) -> None:
        """The learner, then the robots at once: they retry until it listens. The clock starts here."""
        c = self.config
        self.started = time.time()
        self.deadline = self.started + c.minutes * 60
        env = single_thread_env()
        self.learner = LearnerProcess(
            self.out / "learner", self.token_file, self.logs / "learner.log", port=self.port,
            dashboard_port=self.dashboard_port, env=env,
            extra=["--operators", str(c.operators), "--min-demos", str(c.demos_per_robot * c.robots),
                   "--publish-until", str(self.deadline - c.final_eval_s),
                   "--bootstrap-updates", str(c.bootstrap_updates), "--policy", c.policy, "--base", c.base,
                   "--head-updates", str(c.head_updates), "--publish-every-s", str(c.publish_every_s),
                   "--publish-every-updates", "100000", "--operator-token-file", str(self.out / "operators.txt")],
        ).launch()
        for i in range(c.robots):
            name = f"robot-{i + 1}"
            self.robots.append(spawn_robot(
                self.learner.address, name, ",".join(c.tasks), self.token_file, self.out / "robots" / name,
                self.logs / f"{name}.log", env=env, driver=c.driver_flags,
                extra=["--demos", str(c.demos_per_robot), "--eval-seeds", str(c.seeds_per_task),
                       "--eval-index", str(i), "--eval-stride", str(c.robots), "--seed", str(i + 1),
                       "--help-gate", c.help_gate]))

    def progress(self) -> FleetProgress | None:
        """What the store holds now; None before the learner has created it."""
        if not self.db_path.exists():
            return None
        reader = StoreReader(self.out / "learner")
        table = self._with_verdicts(version_table(reader, self.config.robots, self.config.operators,
                                                  self.config.eval_episodes, self._version_records()))
        demos = sum(reader.demonstration_counts().values())
        reader.close()
        return FleetProgress(time.time() - self.started, demos, table)

    def _version_records(self) -> list[dict]:
        """The learner's version records (the trainer's figures per version), read-only."""
        import sqlite3

        from learner.versions import VersionRegistry

        registry = None
        try:
            registry = VersionRegistry(self.out / "learner", readonly=True)
            return registry.versions()
        except sqlite3.OperationalError:  # the index or its versions table not made yet
            return []
        finally:
            if registry is not None:
                registry.close()

    def _with_verdicts(self, table: list[dict]) -> list[dict]:
        """Each row's canary verdict ("promoted", "rolled back", or None: no trial, or none yet)."""
        found = verdicts(self.out / "learner")
        for row in table:
            row["canary"] = found.get(row["version"])
        return table

    def watch(self, report: Report | None = print_progress, alarms: Sequence[Alarm] = ()) -> None:
        """Until the deadline: progress to `report` every POLL_S seconds, and each alarm's action
        once, `seconds` after the start. A process that exits early ends the run with an error."""
        pending = sorted(alarms, key=lambda alarm: alarm[0])
        while time.time() < self.deadline:
            now = time.time()
            next_alarm = self.started + pending[0][0] - now if pending else POLL_S
            time.sleep(min(POLL_S, max(0.0, self.deadline - now), max(0.0, next_alarm)))
            while pending and time.time() >= self.started + pending[0][0]:
                pending.pop(0)[1]()
            for proc in [self.learner.proc, *self.robots]:
                if proc.poll() is not None:
                    raise RuntimeError(f"a fleet process exited early (code {proc.returncode}); see {self.logs}")
            progress = self.progress()
            if progress is not None and report is not None:
                report(self.config, progress)

    def stop(self) -> None:
        stop_fleet(self.learner.proc if self.learner else None, self.robots)

    def run(self, report: Report | None = print_progress, alarms: Sequence[Alarm] = ()) -> dict:
        """start(), watch() and summary(); the processes are stopped however the watch ends."""
        try:
            self.start()
            self.watch(report, alarms)
        finally:
            self.stop()
        return self.summary()

    def summary(self) -> dict:
        """The run's figures from the store and the robots' stats files, also written to DIR/summary.json."""
        c = self.config
        reader = StoreReader(self.out / "learner")
        table = self._with_verdicts(version_table(reader, c.robots, c.operators, c.eval_episodes,
                                                  self._version_records()))
        reader.close()
        evaluated = [r for r in table if r["eval_complete"] and r["canary"] != "rolled back"]
        first, final = (evaluated[0], evaluated[-1]) if evaluated else (None, None)
        summary = {"versions": table, "robots": c.robots, "operators": c.operators,
                   "eval_seeds_per_task": c.seeds_per_task, "demos_per_task": c.demos,
                   "first_version": first, "final_version": final, "tasks": list(c.tasks),
                   "task_success": {task: {"first_version": first["task_success"].get(task) if first else None,
                                           "final_version": final["task_success"].get(task) if final else None}
                                    for task in c.tasks},
                   "wall_seconds": round(time.time() - self.started, 1), "help_gate": c.help_gate,
                   "robot_loops": robot_stats(self.out / "robots")}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


def run_fleet(config: FleetConfig, report: Report | None = print_progress, alarms: Sequence[Alarm] = ()) -> dict:
    """A fleet run from start to summary (see FleetRun.run)."""
    return FleetRun(config).run(report, alarms)


def robot_stats(robots_dir: Path) -> dict:
    """The robots' control-loop figures summed over the fleet (each robot writes stats.json on exit)."""
    stats = [json.loads(p.read_text()) for p in sorted(robots_dir.glob("*/stats.json"))]
    total = {key: sum(s.get(key, 0) for s in stats) for key, value in (stats[0] if stats else {}).items()
             if isinstance(value, (int, float))}
    if total.get("ticks"):
        total["missed_tick_rate"] = round(total["missed_ticks"] / total["ticks"], 5)
    total["robots_reporting"] = len(stats)
    return total

"""Fleet scaling: time to a target success rate against the number of robots (SOP's claim), RECAP
against HG-DAgger, and the adaptive sampler against the fixed 50/50 mix.

Protocol (the same for every run):
  * one initial policy per algorithm and task set: `--demos` scripted demonstrations per task,
    trained to convergence (`--bootstrap-updates`); every run starts from a copy of that store,
    demonstrations and version 0 included, so only what the fleet adds differs;
  * N paced robots (10 Hz, real time: the fleet loop's control rate), M = max(1, N // 2) simulated
    operators answering FLOAT's help requests; seeds 1000 * seed + robot;
  * the trainer is capped at `--updates-per-s` and publishes every `--publish-every-s`, for every
    N, so only the amount of fleet data differs;
  * versions go to every robot at once (no canary: the robots run no evaluation episodes);
  * an evaluator outside the fleet runs each new version (the newest, when several wait) on the
    same fixed seeds, `--eval-seeds` per task, unpaced, with no operator. A run ends when a version
    reaches `--target` or at `--cap-minutes`.

Figures
  time_to_target_s        {N: median over seeds of the time from the robots' start to the
                          publication of the first version evaluated at or above the target}
                          (a run that never got there counts as its cap, flagged in per_run)
  robot_hours_to_target   {N: N * that time / 3600}
  speedup                 {N: median time at N=1 / median time at N}
  human_steps_to_target   {N: median operator time-steps spent before the target version}
  where_time_goes         {N: CPU cores used on average by robots, learner (gRPC ingest and the
                          operator pool), trainer and evaluator}
  trainer_updates_per_s   {N: the update rate the trainer achieved against the cap}
  algorithms              {hg_dagger, recap: time to target, best and last success, per seed} at
                          `--compare-robots` robots with the same seeds and cap
  samplers                {offline_online_mix, adaptive: the same on the multi-task set}
  per_run                 every run: its curve [(seconds, version, success)], time to target,
                          human steps, CPU use
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.fleet_watch import CpuMeter, Evaluator, _children
from bench.rlco import _learner
from harness.processes import spawn_robot, stop_fleet
from learner.store import StoreReader
from learner.trainer import TrainerConfig
from learner.versions import VersionRegistry

@dataclass
class RunSpec:
    part: str        # "scaling", "algorithms" or "samplers"
    robots: int
    seed: int
    algorithm: str
    sampler: str
    tasks: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{'+'.join(self.tasks)}-{self.algorithm}-{self.sampler}-n{self.robots}-s{self.seed}"


# -- the initial policy --------------------------------------------------------------------------

def initial_store(root: Path, tasks: tuple[str, ...], algorithm: str, args, env: dict) -> Path:
    """A store holding `--demos` demonstrations per task and version 0 trained on them by
    `algorithm`; made once per task set and algorithm, then copied for every run."""
    from learner.versions import VersionRegistry

    base = root / f"initial-{'+'.join(tasks)}"
    logs = base / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    demos = base / "demos" / "learner"
    if not (base / "demos" / "done").exists():
        print(f"initial policy: recording {args.demos} demonstrations per task of {','.join(tasks)}", flush=True)
        learner = _learner(demos, ["--no-train"], logs, env, "demos")
        per_robot = -(-args.demos * len(tasks) // 2)
        robots = [spawn_robot(learner.address, f"demo-{i}", ",".join(tasks), demos.parent / "tokens.txt",
                              base / "demos" / "robots" / f"demo-{i}", logs / f"demo-{i}.log",
                              ["--fast", "--preview-hz", "0", "--demos", str(per_robot), "--max-episodes", str(per_robot),
                               "--eval-seeds", "0", "--seed", str(900 + i)], env) for i in range(2)]
        for robot in robots:
            robot.wait()
        time.sleep(2.0)
        learner.stop(30)
        (base / "demos" / "done").touch()
    store = base / algorithm / "learner"
    if not (base / algorithm / "done").exists():
        shutil.rmtree(base / algorithm, ignore_errors=True)
        shutil.copytree(demos.parent, store.parent, ignore=shutil.ignore_patterns("done", "robots"))
        reader = StoreReader(demos)
        count = sum(reader.demonstration_counts().values())
        reader.close()
        print(f"initial policy: {algorithm} version 0 on {count} demonstrations, {args.bootstrap_updates} updates",
              flush=True)
        learner = _learner(store, ["--algorithm", algorithm, "--min-demos", str(count),
                                   "--bootstrap-updates", str(args.bootstrap_updates)], logs, env, f"v0-{algorithm}")
        try:
            while True:
                registry = VersionRegistry(store)
                latest = registry.latest()
                registry.close()
                if latest is not None:
                    break
                if learner.proc.poll() is not None:
                    raise RuntimeError(f"the learner training version 0 exited; see {logs}")
                time.sleep(2.0)
        finally:
            learner.stop(30)
        (base / algorithm / "done").touch()
    return store


def evaluate_version_zero(store: Path, pool, tasks, args) -> float:
    marker = store.parent / "v0_success.json"
    if not marker.exists():
        from learner.versions import VersionRegistry

        registry = VersionRegistry(store)
        evaluator = Evaluator(pool, tasks, args.eval_seeds)
        evaluator.submit(0, registry.checkpoint_dir(0))
        registry.close()
        while evaluator.collect() is None:
            time.sleep(0.5)
        marker.write_text(json.dumps({"success": evaluator.results[0], "per_task": evaluator.per_task[0]}))
    return json.loads(marker.read_text())["success"]


# -- one fleet run ---------------------------------------------------------------------------------

@dataclass
class FleetRun:
    spec: RunSpec
    initial: Path
    root: Path
    args: argparse.Namespace
    pool: object
    env: dict
    v0_success: float
    processes: dict = field(default_factory=dict)

    def start(self) -> None:
        a, s = self.args, self.spec
        self.dir = self.root / s.name
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.copytree(self.initial.parent, self.dir, ignore=shutil.ignore_patterns("done", "v0_success.json", "robots"))
        self.data = self.dir / "learner"
        self.logs = self.dir / "logs"
        self.logs.mkdir(exist_ok=True)
        self.learner = _learner(self.data, [
            "--algorithm", s.algorithm, "--sampler", s.sampler, "--operators", str(max(1, s.robots // 2)),
            "--max-updates-per-s", str(a.updates_per_s), "--publish-every-s", str(a.publish_every_s),
            "--ema-decay", str(a.ema_decay), "--canary-fraction", "0",  # the evaluator below judges every version
            "--publish-every-updates", "1000000", "--tasks", ",".join(s.tasks), "--trainer-seed", str(s.seed)],
            self.logs, self.env, "fleet")
        self.robots = [spawn_robot(self.learner.address, f"arm-{i}", ",".join(s.tasks), self.dir / "tokens.txt",
                                   self.dir / "robots" / f"arm-{i}", self.logs / f"arm-{i}.log",
                                   ["--preview-hz", "0", "--eval-seeds", "0", "--seed", str(1000 * s.seed + i)], self.env)
                       for i in range(s.robots)]
        self.started = time.time()
        self.cpu = CpuMeter()
        self.evaluator = Evaluator(self.pool, s.tasks, a.eval_seeds)
        self.evaluator.results[0] = self.v0_success
        self.published: dict[int, float] = {0: 0.0}  # version -> seconds after the start
        self.updates: dict[int, int] = {}
        self.checkpoints: dict[int, Path] = {}
        self.registry = VersionRegistry(self.data, readonly=True)
        self.last_cpu = 0.0
        self.reached: int | None = None
        self.closing = False  # past the cap: no version is evaluated after the one in hand
        self.done = False
        self.last_report = 0.0

    def _versions(self) -> None:
        """New publications from the run's registry, through one read-only connection."""
        newest = max(self.published)
        first_published: dict[int, float] = {}
        for p in self.registry.publications():
            if p["version"] > newest:
                first_published.setdefault(p["version"], p["published_at"])
        if not first_published:
            return
        for entry in self.registry.versions():
            version = entry["version"]
            if version in first_published:
                self.published[version] = first_published[version] - self.started
                self.checkpoints[version] = entry["directory"]
                self.updates[version] = int(entry["info"].get("updates", 0))

    def poll(self) -> None:
        if self.done:
            return
        if time.time() - self.last_cpu >= 5.0:  # cumulative counters: a reading every few seconds is enough
            self.last_cpu = time.time()
            self.cpu.sample("robots", [p.pid for p in self.robots])
            self.cpu.sample("learner", [self.learner.proc.pid])
            self.cpu.sample("trainer", _children(self.learner.proc.pid))
        self._versions()
        finished = self.evaluator.collect()
        if finished is not None and self.evaluator.results[finished] >= self.args.target and self.reached is None:
            self.reached = finished
        elapsed = time.time() - self.started
        cap_s = self.args.cap_minutes * 60
        if self.evaluator.pending is None and self.reached is None and not self.closing:
            # Versions published within the cap count; past it, the newest of them is the last one evaluated.
            waiting = [v for v, at in self.published.items() if v not in self.evaluator.results and at <= cap_s]
            self.closing = elapsed > cap_s
            if waiting:
                self.evaluator.submit(max(waiting), self.checkpoints[max(waiting)])
        if time.time() - self.last_report > 30:
            self.last_report = time.time()
            curve = " ".join(f"v{v}:{self.evaluator.results[v]:.0%}" for v in sorted(self.evaluator.results))
            print(f"  {self.spec.name}: {elapsed / 60:4.1f} min, latest v{max(self.published)}, evaluated {curve}",
                  flush=True)
        if self.reached is not None or (self.closing and self.evaluator.pending is None):
            self.finish()

    def finish(self) -> None:
        ended = time.time()
        stop_fleet(self.learner.proc, self.robots, 30)
        self.registry.close()
        self.done = True
        s = self.spec
        reached = self.reached is not None
        time_s = self.published[self.reached] if reached else self.args.cap_minutes * 60
        reader = StoreReader(self.data)
        human, episodes = reader.human_effort(completed_by=self.started + time_s)
        reader.close()
        wall = ended - self.started
        v_last = max(self.published)
        rate = ((self.updates[v_last] - min(self.updates.values())) / max(1e-9, self.published[v_last] - self.published[min(self.updates)])
                if len(self.updates) >= 2 else None)
        curve = [(round(self.published[v], 1), v, self.evaluator.results[v]) for v in sorted(self.evaluator.results)]
        self.result = {
            "part": s.part, "robots": s.robots, "operators": max(1, s.robots // 2), "seed": s.seed,
            "algorithm": s.algorithm, "sampler": s.sampler, "tasks": list(s.tasks), "reached": reached,
            "time_to_target_s": round(time_s, 1), "robot_hours_to_target": round(s.robots * time_s / 3600, 4),
            "human_steps_to_target": int(human), "training_episodes_to_target": int(episodes),
            "curve": curve, "per_task": {str(v): r for v, r in self.evaluator.per_task.items()},
            "best_success": max(r for _, _, r in curve), "last_success": curve[-1][2], "wall_s": round(wall, 1),
            "trainer_updates_per_s": None if rate is None else round(rate, 2),
            "cores": {role: round(self.cpu.total(role) / wall, 2) for role in ("robots", "learner", "trainer")}
                     | {"evaluator": round(self.evaluator.busy_s / wall, 2)},
        }
        print(f"  {s.name}: {'reached' if reached else 'did not reach'} {self.args.target:.0%} "
              f"{'at' if reached else 'within'} {time_s / 60:.1f} min (v{self.reached}); cores {self.result['cores']}",
              flush=True)
        if not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def run_all(specs: list[RunSpec], root: Path, args, pool, env: dict) -> list[dict]:
    """Runs the specs, `--concurrent` at a time, in the order given."""
    initial, v0 = {}, {}
    for spec in specs:
        key = (spec.tasks, spec.algorithm)
        if key not in initial:
            initial[key] = initial_store(root, spec.tasks, spec.algorithm, args, env)
            v0[key] = evaluate_version_zero(initial[key], pool, spec.tasks, args)
            print(f"initial policy {spec.algorithm} on {','.join(spec.tasks)}: success {v0[key]:.0%}", flush=True)
    waiting, active, results = list(specs), [], []
    while waiting or active:
        while waiting and len(active) < args.concurrent:
            spec = waiting.pop(0)
            key = (spec.tasks, spec.algorithm)
            run = FleetRun(spec, initial[key], root / "runs", args, pool, env, v0[key])
            print(f"run {spec.name}: {spec.robots} robots, {max(1, spec.robots // 2)} operators", flush=True)
            run.start()
            active.append(run)
        time.sleep(1.0)
        for run in list(active):
            run.poll()
            if run.done:
                active.remove(run)
                results.append(run.result)
                if args.json_partial:  # what is measured so far survives a run cut short
                    Path(args.json_partial).write_text(json.dumps(summarise(results, args), indent=2))
    return results


# -- figures -------------------------------------------------------------------------------------

def _median(values):
    return float(np.median(values)) if values else None


def summarise(results: list[dict], args) -> dict:
    scaling = [r for r in results if r["part"] == "scaling"]
    sizes = sorted({r["robots"] for r in scaling})
    by_n = {n: [r for r in scaling if r["robots"] == n] for n in sizes}
    figures: dict = {"target": args.target, "tasks": args.tasks, "updates_per_s_cap": args.updates_per_s,
                     "ema_decay": getattr(args, "ema_decay", None), "compare_robots": args.compare_robots,
                     "publish_every_s": args.publish_every_s, "cap_minutes": args.cap_minutes,
                     "eval_seeds_per_task": args.eval_seeds, "demos_per_task": args.demos}
    time_to = {str(n): _median([r["time_to_target_s"] for r in runs]) for n, runs in by_n.items()}
    figures["time_to_target_s"] = time_to
    figures["robot_hours_to_target"] = {str(n): _median([r["robot_hours_to_target"] for r in runs])
                                        for n, runs in by_n.items()}
    figures["reached"] = {str(n): f"{sum(r['reached'] for r in runs)}/{len(runs)}" for n, runs in by_n.items()}
    if "1" in time_to:
        figures["speedup"] = {n: round(time_to["1"] / t, 2) if t else None for n, t in time_to.items()}
    figures["human_steps_to_target"] = {str(n): _median([r["human_steps_to_target"] for r in runs])
                                        for n, runs in by_n.items()}
    figures["trainer_updates_per_s"] = {str(n): _median([r["trainer_updates_per_s"] for r in runs
                                                         if r["trainer_updates_per_s"] is not None])
                                        for n, runs in by_n.items()}
    figures["where_time_goes"] = {str(n): {role: _median([r["cores"][role] for r in runs])
                                           for role in ("robots", "learner", "trainer", "evaluator")}
                                  for n, runs in by_n.items()}
    for part, key in (("algorithms", "algorithm"), ("samplers", "sampler")):
        arms = {}
        for r in results:
            if r["part"] == part or (part == "algorithms" and r["part"] == "scaling" and r["robots"] == args.compare_robots
                                     and r["algorithm"] == "hg_dagger" and tuple(r["tasks"]) == tuple(args.tasks.split(","))):
                arms.setdefault(r[key], []).append(r)
        if arms:
            figures[part] = {arm: {"time_to_target_s": _median([r["time_to_target_s"] for r in runs]),
                                   "reached": f"{sum(r['reached'] for r in runs)}/{len(runs)}",
                                   "best_success": _median([r["best_success"] for r in runs]),
                                   "last_success": _median([r["last_success"] for r in runs]),
                                   "human_steps_to_target": _median([r["human_steps_to_target"] for r in runs]),
                                   "per_seed": {str(r["seed"]): r["time_to_target_s"] for r in runs}}
                             for arm, runs in arms.items()}
    figures["per_run"] = results
    return figures


def plot(figures: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [("scaling", "robots", "N = {}"), ("algorithms", "algorithm", "{}"), ("samplers", "sampler", "{}")]
    runs = figures["per_run"]
    present = [p for p in parts if any(r["part"] == p[0] for r in runs)]
    fig, axes = plt.subplots(1, len(present), figsize=(5.5 * len(present), 4), squeeze=False)
    for ax, (part, key, label) in zip(axes[0], present):
        colours = {}
        # The HG-DAgger arm of the algorithm comparison is the scaling run at the comparison's size.
        members = [r for r in runs if r["part"] == part or (
            part == "algorithms" and r["part"] == "scaling" and r["robots"] == figures.get("compare_robots")
            and r["algorithm"] == "hg_dagger")]
        for r in sorted(members, key=lambda r: (str(r[key]), r["seed"])):
            first = r[key] not in colours
            colour = colours.setdefault(r[key], f"C{len(colours)}")
            t, _, success = zip(*r["curve"])
            ax.step(np.array(t) / 60, success, where="post", color=colour, alpha=0.8,
                    label=label.format(r[key]) if first else None)
            ax.plot(np.array(t) / 60, success, "o", color=colour, ms=3)
        ax.axhline(figures["target"], color="grey", ls="--", lw=1)
        ax.set_xlabel("minutes since the robots started")
        ax.set_ylabel("evaluated success")
        ax.set_title(part)
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="fleet bench scaling")
    parser.add_argument("--robots", default="1,4", help="fleet sizes for the scaling part")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tasks", default="push_cube", help="the scaling and algorithm runs' task set (the demo's)")
    parser.add_argument("--demos", type=int, default=12, help="demonstrations per task for the initial policy")
    parser.add_argument("--bootstrap-updates", type=int, default=TrainerConfig.bootstrap_updates)
    parser.add_argument("--target", type=float, default=0.3, help="success rate that ends a run")
    parser.add_argument("--eval-seeds", type=int, default=20, help="fixed evaluation seeds per task")
    parser.add_argument("--updates-per-s", type=float, default=30.0,
                        help="the trainer's cap, equal for every N (below what it reaches beside 4 robots on 2 cores)")
    parser.add_argument("--publish-every-s", type=float, default=TrainerConfig.publish_every_s)
    parser.add_argument("--ema-decay", type=float, default=TrainerConfig.ema_decay,
                        help="the trainer's weight average; its lag (~1 / (1 - d) updates) is the same for every N")
    parser.add_argument("--cap-minutes", type=float, default=10.0)
    parser.add_argument("--parts", default="scaling,algorithms,samplers")
    parser.add_argument("--compare-robots", type=int, default=2, help="fleet size of the HG-DAgger/RECAP runs")
    parser.add_argument("--sampler-tasks", default="reach,press_button,push_cube")
    parser.add_argument("--sampler-robots", type=int, default=4)
    parser.add_argument("--sampler-arms", default="offline_online_mix,adaptive", help="the samplers compared")
    parser.add_argument("--sampler", default="offline_online_mix", help="the sampler of the scaling runs")
    parser.add_argument("--concurrent", type=int, default=1, help="runs at the same time (a machine with cores to spare)")
    parser.add_argument("--workers", type=int, default=1, help="evaluation processes")
    parser.add_argument("--plot", default="docs/scaling.png")
    parser.add_argument("--work", help="keep initial stores here (reused by a later call) instead of a temp dir")
    parser.add_argument("--keep", action="store_true", help="keep every run's store and logs")
    parser.add_argument("--json-partial", help="rewrite the figures so far here after every finished run")
    parser.add_argument("--only", help="scaling runs as N:SEED,... instead of every size with every seed "
                                       "(e.g. 1:0,1:1,1:2,4:0,4:1,4:2,2:0,8:0)")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.robots.split(",") if n]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    parts = set(args.parts.split(","))
    tasks = tuple(args.tasks.split(","))
    specs = []
    if "scaling" in parts:
        pairs = ([tuple(int(x) for x in item.split(":")) for item in args.only.split(",")] if args.only
                 else [(n, seed) for seed in seeds for n in sizes])
        specs += [RunSpec("scaling", n, seed, "hg_dagger", args.sampler, tasks) for n, seed in pairs]
    if "algorithms" in parts:
        specs += [RunSpec("algorithms", args.compare_robots, seed, "recap", args.sampler, tasks) for seed in seeds]
        if "scaling" not in parts or args.compare_robots not in sizes:
            specs += [RunSpec("algorithms", args.compare_robots, seed, "hg_dagger", args.sampler, tasks) for seed in seeds]
    if "samplers" in parts:
        multi = tuple(args.sampler_tasks.split(","))
        specs += [RunSpec("samplers", args.sampler_robots, seed, "hg_dagger", sampler, multi)
                  for seed in seeds for sampler in args.sampler_arms.split(",")]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "PYTHONUNBUFFERED": "1"}
    root = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="fleet-scaling-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"fleet bench scaling: {len(specs)} runs, work in {root}", flush=True)
    started = time.time()
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        results = run_all(specs, root, args, pool, env)
    figures = summarise(results, args)
    figures["wall_minutes"] = round((time.time() - started) / 60, 1)
    if args.plot:
        plot(figures, args.plot)
        figures["plot"] = args.plot
    if not args.work:
        shutil.rmtree(root, ignore_errors=True)
    return figures

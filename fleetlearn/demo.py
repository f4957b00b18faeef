"""`fleet demo`: the whole loop on one machine.

A learner (server + trainer + simulated operator pool) and N simulated robots, each in its own
process, talk gRPC over loopback exactly as they would across machines. Timeline within the
`--minutes` budget:

  1. every robot records a share of the scripted demonstrations (`demos` per task; with several
     tasks every robot goes round the task list, and one policy learns them all, conditioned on
     each task's instruction);
  2. the trainer trains version 0 on them to convergence and publishes it;
  3. robots run the policy; a rollout that goes wrong asks for help, a free simulated operator
     takes over for a segment, and those intervention steps are what HG-DAgger learns from;
     new versions arrive every minute or so and robots swap between episodes;
  4. publishing stops early enough that the final version finishes its evaluation share.

Progress is a live table per policy version; at the end DIR/summary.json and
DIR/learning_curve.png are written. The operator dashboard runs all along (its URL, with the
demo's operator token, is printed first): watch the robots, answer help requests before the
simulated operators do, take a robot over and drive it from the browser.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from learner.metrics import format_table, version_table
from learner.store import StoreReader

# Seconds one episode takes on average at 10 Hz (for the evaluation cadence below).
MEAN_EPISODE_S = 4.5


@dataclass
class DemoConfig:
    minutes: float = 15.0
    robots: int = 4
    operators: int = 2
    out: Path = Path("runs/demo")
    tasks: tuple[str, ...] = ("push_cube",)
    demos: int = 12  # per task
    eval_seeds: int | None = None  # per task; default 30 for one task, 20 each for several
    policy: str = "default"  # or "ptp": long context, trained in stages (learner/trainer.py)
    help_gate: str = "float"  # when robots ask for help: "float", "rule" (the sim's fixed rule) or "off"
    dashboard_port: int = 8080  # the operator dashboard (a free port when this one is taken; -1: none)
    screenshot: Path | None = None  # save a picture of the dashboard's fleet view here, `screenshot_at_min` in
    screenshot_at_min: float = 4.0

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
        return self.publish_every_s + 40.0

    @property
    def head_updates(self) -> int:
        """With --policy ptp, stage 3 of version 0: the long-context head on cached embeddings
        (warm-started from stage 1's head, so fewer updates than stage 1)."""
        return 1000 if len(self.tasks) == 1 else 2000

    @property
    def bootstrap_updates(self) -> int:
        """Version 0 trains to convergence: about 1500 updates for one task, 3000 for a suite."""
        return 1500 if len(self.tasks) == 1 else 3000


def free_port(preferred: int = 0) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_demo(config: DemoConfig) -> dict:
    out = Path(config.out)
    if (out / "learner").exists():
        sys.exit(f"{out} already holds a run; pass --out to a new directory")
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    token_file = out / "tokens.txt"
    token_file.write_text(secrets.token_hex(16) + "\n")
    operator_token = secrets.token_urlsafe(24)
    (out / "operators.txt").write_text(f"operator {operator_token}\n")
    port = free_port()
    dashboard_port = free_port(config.dashboard_port) if config.dashboard_port >= 0 else -1
    started = time.time()
    deadline = started + config.minutes * 60
    publish_until = deadline - config.final_eval_s
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    fleet = [sys.executable, "-m", "fleetlearn.cli"]
    processes: list[subprocess.Popen] = []

    def spawn(args: list[str], log_name: str) -> subprocess.Popen:
        log = open(out / "logs" / log_name, "w")
        proc = subprocess.Popen(fleet + args, stdout=log, stderr=subprocess.STDOUT, env=env)
        processes.append(proc)
        return proc

    per_robot_demos = -(-config.demos * len(config.tasks) // config.robots)
    tasks = ",".join(config.tasks)
    print(f"fleet demo: {config.robots} robots, {config.operators} simulated operators, tasks {tasks}, "
          f"{config.minutes:g} minutes; logs in {out / 'logs'}", flush=True)
    spawn(["learner", "--data", str(out / "learner"), "--host", "127.0.0.1", "--port", str(port),
           "--token-file", str(token_file), "--operators", str(config.operators),
           "--min-demos", str(per_robot_demos * config.robots), "--publish-until", str(publish_until),
           "--bootstrap-updates", str(config.bootstrap_updates), "--policy", config.policy,
           "--head-updates", str(config.head_updates),
           "--publish-every-s", str(config.publish_every_s), "--publish-every-updates", "100000",
           "--dashboard-port", str(dashboard_port), "--operator-token-file", str(out / "operators.txt"),
           "--insecure"],  # everything on this machine's loopback
          "learner.log")
    dashboard_url = f"http://127.0.0.1:{dashboard_port}/?token={operator_token}" if dashboard_port >= 0 else None
    if dashboard_url:
        print(f"operator dashboard: {dashboard_url}", flush=True)
    for i in range(config.robots):
        spawn(["robot", "--sim", tasks, "--learner", f"127.0.0.1:{port}", "--robot-id", f"robot-{i + 1}",
               "--token-file", str(token_file), "--work-dir", str(out / "robots" / f"robot-{i + 1}"),
               "--demos", str(per_robot_demos), "--eval-seeds", str(config.seeds_per_task), "--eval-index", str(i),
               "--eval-stride", str(config.robots), "--seed", str(i + 1), "--help-gate", config.help_gate,
               "--insecure"],
              f"robot-{i + 1}.log")

    db_path = out / "learner" / "index.sqlite"
    table: list[dict] = []
    screenshot_at = started + config.screenshot_at_min * 60 if config.screenshot and dashboard_url else None
    try:
        while time.time() < deadline:
            time.sleep(min(15.0, max(0.0, deadline - time.time()),
                           max(0.0, screenshot_at - time.time()) if screenshot_at else 15.0))
            if screenshot_at and time.time() >= screenshot_at:
                screenshot_at = None
                save_screenshot(dashboard_url, Path(config.screenshot))
            for proc in processes:
                if proc.poll() is not None:
                    raise RuntimeError(f"a fleet process exited early (code {proc.returncode}); see {out / 'logs'}")
            if db_path.exists():
                reader = StoreReader(out / "learner")
                table = version_table(reader, config.robots, config.operators, config.eval_episodes)
                demos = sum(reader.demonstration_counts().values())
                reader.close()
                elapsed = time.time() - started
                print(f"\n[{elapsed / 60:5.1f} / {config.minutes:g} min] demonstrations stored: {demos}", flush=True)
                if table:
                    print(format_table(table), flush=True)
                else:
                    print("training version 0 on the demonstrations...", flush=True)
    finally:
        for proc in reversed(processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT if proc is processes[0] else signal.SIGTERM)
        for proc in processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    reader = StoreReader(out / "learner")
    table = version_table(reader, config.robots, config.operators, config.eval_episodes)
    reader.close()
    evaluated = [r for r in table if r["eval_complete"]]
    first, final = (evaluated[0], evaluated[-1]) if evaluated else (None, None)
    summary = {"versions": table, "robots": config.robots, "operators": config.operators,
               "eval_seeds_per_task": config.seeds_per_task, "demos_per_task": config.demos,
               "first_version": first, "final_version": final, "tasks": list(config.tasks),
               "task_success": {task: {"first_version": first["task_success"].get(task) if first else None,
                                       "final_version": final["task_success"].get(task) if final else None}
                                for task in config.tasks},
               "wall_seconds": round(time.time() - started, 1), "help_gate": config.help_gate,
               "robot_loops": _robot_stats(out / "robots")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_learning_curve(table, out / "learning_curve.png")
    print("\nfinal:\n" + format_table(table))
    print(f"wrote {out / 'summary.json'} and {out / 'learning_curve.png'}")
    return summary


def save_screenshot(url: str, path: Path) -> None:
    """A picture of the dashboard's fleet view, taken in headless Chromium (if it is installed)."""
    from dashboard.browser import find_chromium, launch

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("no screenshot: playwright is not installed", flush=True)
        return
    if find_chromium() is None:
        print("no screenshot: chromium is not installed", flush=True)
        return
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto(url)
        page.wait_for_selector(".tile img[src]", timeout=30_000)
        time.sleep(3)  # a few live updates
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path))
        browser.close()
    print(f"saved a screenshot of the dashboard to {path}", flush=True)


def _robot_stats(robots_dir: Path) -> dict:
    """The robots' control-loop figures summed over the fleet (each robot writes stats.json on exit)."""
    stats = [json.loads(p.read_text()) for p in sorted(robots_dir.glob("*/stats.json"))]
    total = {key: sum(s.get(key, 0) for s in stats) for key, value in (stats[0] if stats else {}).items()
             if isinstance(value, (int, float))}
    if total.get("ticks"):
        total["missed_tick_rate"] = round(total["missed_ticks"] / total["ticks"], 5)
    total["robots_reporting"] = len(stats)
    return total


def plot_learning_curve(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table if r["success_rate"] is not None and r["eval_complete"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    tasks = sorted({task for r in rows for task in r["task_success"]})
    if len(tasks) > 1:
        for task in tasks:
            ax1.plot([r["version"] for r in rows], [100 * r["task_success"].get(task, 0.0) for r in rows],
                     ".--", alpha=0.7, label=task)
    ax1.plot([r["version"] for r in rows], [100 * r["success_rate"] for r in rows], "o-", color="black",
             label="all tasks")
    if len(tasks) > 1:
        ax1.legend(fontsize=7)
    ax1.set(xlabel="policy version", ylabel="evaluation success (%)", title="Success on fixed evaluation seeds",
            ylim=(0, 100))
    ax1.grid(alpha=0.3)
    rows = [r for r in table if r["interventions_per_episode"] is not None]
    ax2.plot([r["version"] for r in rows], [r["interventions_per_episode"] for r in rows], "s-", color="tab:red")
    ax2.set(xlabel="policy version", ylabel="takeovers per training episode", title="Human interventions")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

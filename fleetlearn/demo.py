"""`fleet demo`: the whole loop on one machine.

A learner (server + trainer + simulated operator pool) and N simulated robots, each in its own
process, talk gRPC over loopback exactly as they would across machines. Timeline within the
`--minutes` budget:

  1. every robot records a share of the scripted demonstrations;
  2. the trainer trains version 0 on them to convergence and publishes it;
  3. robots run the policy; a rollout that goes wrong asks for help, a free simulated operator
     takes over for a segment, and those intervention steps are what HG-DAgger learns from;
     new versions arrive every minute or so and robots swap between episodes;
  4. publishing stops early enough that the final version finishes its evaluation share.

Progress is a live table per policy version; at the end DIR/summary.json and
DIR/learning_curve.png are written.
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
from learner.store import connect

N_EVAL_SEEDS = 30


@dataclass
class DemoConfig:
    minutes: float = 15.0
    robots: int = 4
    operators: int = 2
    out: Path = Path("runs/demo")
    task: str = "push_cube"
    demos: int = 12
    # Seconds before the deadline after which no new version is published, so the last one
    # can finish its evaluation share (each robot runs eval and training episodes alternately).
    final_eval_s: float = 130.0


def _free_port() -> int:
    with socket.socket() as s:
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
    port = _free_port()
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

    per_robot_demos = -(-config.demos // config.robots)
    print(f"fleet demo: {config.robots} robots, {config.operators} simulated operators, task {config.task}, "
          f"{config.minutes:g} minutes; logs in {out / 'logs'}", flush=True)
    spawn(["learner", "--data", str(out / "learner"), "--host", "127.0.0.1", "--port", str(port),
           "--token-file", str(token_file), "--operators", str(config.operators),
           "--min-demos", str(per_robot_demos * config.robots), "--publish-until", str(publish_until),
           # About one evaluation round of the fleet (each robot runs its share of the seeds
           # interleaved with training episodes), so every version gets its full evaluation.
           "--publish-every-s", "90", "--publish-every-updates", "1500"],
          "learner.log")
    for i in range(config.robots):
        spawn(["robot", "--sim", config.task, "--learner", f"127.0.0.1:{port}", "--robot-id", f"robot-{i + 1}",
               "--token-file", str(token_file), "--work-dir", str(out / "robots" / f"robot-{i + 1}"),
               "--demos", str(per_robot_demos), "--eval-seeds", str(N_EVAL_SEEDS), "--eval-index", str(i),
               "--eval-stride", str(config.robots), "--seed", str(i + 1)], f"robot-{i + 1}.log")

    db_path = out / "learner" / "index.sqlite"
    table: list[dict] = []
    try:
        while time.time() < deadline:
            time.sleep(min(15.0, max(0.0, deadline - time.time())))
            for proc in processes:
                if proc.poll() is not None:
                    raise RuntimeError(f"a fleet process exited early (code {proc.returncode}); see {out / 'logs'}")
            if db_path.exists():
                db = connect(db_path, readonly=True)
                table = version_table(db, config.robots, config.operators, N_EVAL_SEEDS)
                demos = db.execute("SELECT COUNT(*) FROM episodes WHERE kind='demonstration' AND complete=1").fetchone()[0]
                db.close()
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
    db = connect(db_path, readonly=True)
    table = version_table(db, config.robots, config.operators, N_EVAL_SEEDS)
    db.close()
    evaluated = [r for r in table if r["eval_complete"]]
    summary = {"versions": table, "robots": config.robots, "operators": config.operators,
               "eval_seeds": N_EVAL_SEEDS,
               "first_version": evaluated[0] if evaluated else None,
               "final_version": evaluated[-1] if evaluated else None,
               "task": config.task, "wall_seconds": round(time.time() - started, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_learning_curve(table, out / "learning_curve.png")
    print("\nfinal:\n" + format_table(table))
    print(f"wrote {out / 'summary.json'} and {out / 'learning_curve.png'}")
    return summary


def plot_learning_curve(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table if r["success_rate"] is not None and r["eval_complete"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot([r["version"] for r in rows], [100 * r["success_rate"] for r in rows], "o-")
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

"""RL-Co against its baselines: success on the real-proxy variant (the stand-in for the real world)
and on the sim variant, per seed, with the same tasks, demonstrations and budgets for every arm.

Per seed:
  1. demonstrations through the fleet: one real-proxy robot records `--real-demos` per task, sim
     robots record `--sim-demos` per task (a learner stores them; nothing trains yet);
  2. arm (a), real only: stage I on the real-proxy demonstrations alone;
     arm (b), SFT co-training: stage I on both at `--real-fraction`; it is also version 0 of (c)/(d);
  3. arm (c), RL-Co: the fleet loop from version 0 for `--rl-minutes`: sim robots stream RL
     rollouts, the trainer runs PPO with the real-data anchor (beta `--beta`);
     arm (d), RL without the anchor: the same with beta 0;
  4. every arm's final policy runs `--eval-episodes` evaluation seeds per task on each variant, all
     with the same sampler (the 4-step Gaussian chain RL trains).

Figures: real_proxy_success and sim_success {arm: mean over seeds}, per_seed, episodes_per_arm,
seeds, rl_iterations, and a plot of rollout success over PPO iterations (arms c and d).
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.sim import EVAL_SEED_BASE, _env, _run_episode, _run_pool
from harness.learner import LearnerProcess
from harness.processes import free_port, single_thread_env, spawn_robot, stop_fleet

ARMS = ("real_only", "sft_cotrain", "rl_co", "rl_no_anchor")
TOKEN = "rlco-bench-token-0123456789"
CHAIN = (4, 0.1)  # the evaluation sampler of every arm


def _learner(data: Path, extra: list[str], logs: Path, env: dict, name: str) -> LearnerProcess:
    """A `fleet learner` on a free port with the bench's token beside its store, once it listens."""
    data.parent.mkdir(parents=True, exist_ok=True)
    tokens = data.parent / "tokens.txt"
    tokens.write_text(TOKEN + "\n")
    return LearnerProcess(data, tokens, logs / f"{name}-learner.log", port=free_port(), extra=extra, env=env).start()


def _robot(learner: str, robot_id: str, tasks: str, work: Path, logs: Path, env: dict, extra: list[str]) -> subprocess.Popen:
    return spawn_robot(learner, robot_id, tasks, work.parent / "tokens.txt", work / robot_id, logs / f"{robot_id}.log",
                       ["--fast", "--help-gate", "off", "--preview-hz", "0", *extra], env)


def record_demonstrations(data: Path, tasks: list[str], args, seed: int, logs: Path, env: dict) -> None:
    """Step 1: real-proxy and sim demonstrations recorded by robots into a learner's store."""
    learner = _learner(data, ["--no-train"], logs, env, "demos")
    per_sim_robot = -(-args.sim_demos * len(tasks) // args.sim_robots)
    robots = [_robot(learner.address, "real-1", ",".join(tasks), data.parent / "robots", logs, env,
                     ["--variant", "real-proxy", "--demos", str(args.real_demos * len(tasks)),
                      "--max-episodes", str(args.real_demos * len(tasks)), "--seed", str(1000 * seed + 1)])]
    robots += [_robot(learner.address, f"sim-{i + 1}", ",".join(tasks), data.parent / "robots", logs, env,
                      ["--demos", str(per_sim_robot), "--max-episodes", str(per_sim_robot),
                       "--seed", str(1000 * seed + 2 + i)]) for i in range(args.sim_robots)]
    for robot in robots:
        robot.wait()
    time.sleep(2.0)
    learner.stop(30)


def stage_one(data: Path, out_dir: Path, args, seed: int, real_only: bool, publish: bool) -> Path:
    """Stage I in this process on the store's demonstrations; returns the checkpoint directory."""
    import torch

    from learner.algorithms.rl_co.trainer import RLCoTrainer
    from learner.trainer import TrainerConfig
    from policy import save_checkpoint

    torch.set_num_threads(1)
    config = TrainerConfig(data_dir=data, algorithm="rl_co", bootstrap_updates=args.bootstrap_updates, seed=seed,
                           algorithm_config=dict(real_fraction=args.real_fraction, real_only=real_only, rl=publish))
    trainer = RLCoTrainer(config)
    trainer.refresh()
    print(f"  stage I ({'real only' if real_only else 'co-training'}): {len(trainer.index.groups.get('real', []))} "
          f"real-proxy and {len(trainer.index.groups.get('sim', []))} sim windows, {args.bootstrap_updates} updates",
          flush=True)
    trainer.train_version_zero()
    if publish:  # version 0 of the RL arms, published into their store
        trainer.publish("stage I: SFT co-training", {})
    save_checkpoint(out_dir, trainer.ema, 0, info={"arm": "real_only" if real_only else "sft_cotrain"})
    trainer.reader.close()
    trainer.registry.close()
    return out_dir


def rl_run(data: Path, tasks: list[str], args, seed: int, beta: float, logs: Path, env: dict, name: str) -> Path:
    """Step 3: the fleet loop from version 0 for `rl_minutes`; returns the last version's checkpoint."""
    from learner.versions import VersionRegistry

    learner = _learner(data, ["--algorithm", "rl_co", "--algorithm.loss.beta", str(beta),
                              "--algorithm.episodes-per-iteration", str(args.rl_episodes),
                              "--algorithm.lr", str(args.rl_lr), "--tasks", ",".join(tasks)], logs, env, name)
    robots = [_robot(learner.address, f"{name}-sim-{i + 1}", ",".join(tasks), data.parent / "robots", logs, env,
                     ["--seed", str(1000 * seed + 50 + i), "--eval-seeds", "0"])  # evaluated afterwards
              for i in range(args.sim_robots)]
    started = time.time()
    try:
        while time.time() - started < args.rl_minutes * 60:
            time.sleep(15)
            registry = VersionRegistry(data)
            print(f"  {name}: {(time.time() - started) / 60:4.1f} / {args.rl_minutes:g} min, version "
                  f"{registry.latest()}", flush=True)
            registry.close()
    finally:
        stop_fleet(learner.proc, robots, 30)
    registry = VersionRegistry(data)
    latest = registry.latest()
    directory = registry.checkpoint_dir(latest)
    registry.close()
    return directory


def _eval_episode(job) -> tuple[str, str, str, bool]:
    """One evaluation seed of one arm's policy (the same chain sampler for every arm)."""
    from bench.sim import _policy
    from policy import PolicyRunner

    arm, task, variant, seed, checkpoint_dir = job
    env = _env(task, variant, None)
    runner = PolicyRunner(_policy(checkpoint_dir), seed, rl=CHAIN)
    info = _run_episode(env, seed, lambda obs: runner.act(obs["images"], obs["state"], env.instruction))
    return arm, task, variant, bool(info["is_success"])


def rollout_curve(data: Path) -> list[tuple[int, float]]:
    """(PPO iteration, rollout success) of every RL version in a store."""
    from learner.versions import VersionRegistry

    registry = VersionRegistry(data, readonly=True)
    curve = []
    for entry in registry.versions():
        info = entry["info"]
        if "rl_iteration" in info:
            curve.append((info["rl_iteration"], info["rollout_success"]))
    registry.close()
    return curve


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="fleet bench rlco")
    parser.add_argument("--tasks", default="reach")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--real-demos", type=int, default=20, help="real-proxy demonstrations per task (fixed)")
    parser.add_argument("--sim-demos", type=int, default=100, help="sim demonstrations per task")
    parser.add_argument("--real-fraction", type=float, default=0.5)
    parser.add_argument("--bootstrap-updates", type=int, default=2000)
    parser.add_argument("--rl-minutes", type=float, default=12.0, help="RL time of each RL arm per seed")
    parser.add_argument("--rl-episodes", type=int, default=40)
    parser.add_argument("--rl-lr", type=float, default=3e-5)
    parser.add_argument("--sim-robots", type=int, default=2)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--eval-episodes", type=int, default=50, help="per task, variant and arm")
    parser.add_argument("--plot", default="docs/rlco.png")
    parser.add_argument("--keep", help="keep the stores and logs here")
    parser.add_argument("--arms", default=",".join(ARMS),
                        help=f"which arms to run and evaluate (default all: {','.join(ARMS)}); "
                             "--arms rl_co is one RL-Co run: demonstrations, stage I, RL, evaluation")
    args = parser.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not arms or set(arms) - set(ARMS):
        parser.error(f"--arms takes a comma-separated subset of {','.join(ARMS)}")
    arms = [a for a in ARMS if a in arms]
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    env = single_thread_env()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="rlco-"))
    started = time.time()
    per_seed, curves = {}, {}
    pool = multiprocessing.get_context("spawn").Pool(2)
    try:
        for seed in seeds:
            base = root / f"seed{seed}"
            logs = base / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            print(f"seed {seed}: demonstrations ({args.real_demos} real-proxy, {args.sim_demos} sim per task)...", flush=True)
            record_demonstrations(base / "demos" / "learner", tasks, args, seed, logs, env)
            checkpoints = {}
            if "real_only" in arms:
                shutil.copytree(base / "demos", base / "a")
                checkpoints["real_only"] = stage_one(base / "a" / "learner", base / "arm_a", args, seed, True, False)
            shutil.copytree(base / "demos", base / "b")  # version 0 of (c) and (d) is arm (b)
            checkpoints["sft_cotrain"] = stage_one(base / "b" / "learner", base / "arm_b", args, seed, False, True)
            curves[seed] = {}
            for arm, key, beta in (("rl_co", "c", args.beta), ("rl_no_anchor", "d", 0.0)):
                if arm in arms:
                    shutil.copytree(base / "b", base / key)
                    checkpoints[arm] = rl_run(base / key / "learner", tasks, args, seed, beta, logs, env, arm)
                    curves[seed][arm] = rollout_curve(base / key / "learner")
            jobs = [(arm, task, variant, EVAL_SEED_BASE + i, str(checkpoints[arm]))
                    for arm in arms for task in tasks for variant in ("real-proxy", "sim")
                    for i in range(args.eval_episodes)]
            results = _run_pool(pool, _eval_episode, jobs, f"seed {seed} evaluation")
            per_seed[seed] = {variant: {arm: float(np.mean([ok for a, _, v, ok in results if a == arm and v == variant]))
                                        for arm in arms} for variant in ("real-proxy", "sim")}
            print(f"seed {seed}: real-proxy {per_seed[seed]['real-proxy']}, sim {per_seed[seed]['sim']} "
                  f"({(time.time() - started) / 60:.0f} min so far)", flush=True)
    finally:
        pool.close()
        pool.join()
    mean = {variant: {arm: round(float(np.mean([per_seed[s][variant][arm] for s in seeds])), 3) for arm in arms}
            for variant in ("real-proxy", "sim")}
    real = mean["real-proxy"]
    figures = {
        "real_proxy_success": mean["real-proxy"], "sim_success": mean["sim"],
        "per_seed": {str(s): per_seed[s] for s in seeds}, "seeds": seeds, "tasks": tasks,
        "episodes_per_arm": args.eval_episodes * len(tasks) * len(seeds),
        "rl_iterations": {str(s): {arm: len(curve) for arm, curve in curves[s].items()} for s in seeds},
        "rl_minutes_per_arm": args.rl_minutes, "rl_lr": args.rl_lr, "real_demos_per_task": args.real_demos,
        "sim_demos_per_task": args.sim_demos, "wall_minutes": round((time.time() - started) / 60, 1),
    }
    for other in ("sft_cotrain", "real_only"):
        if "rl_co" in real and other in real:
            figures[f"rl_co_over_{other}_points"] = round(100 * (real["rl_co"] - real[other]), 1)
    _plot(curves, mean, arms, Path(args.plot))
    print(f"real-proxy success: {mean['real-proxy']}; sim success: {mean['sim']}; plot {args.plot}", flush=True)
    return figures


def _plot(curves: dict, mean: dict, arms: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for seed, arms_curves in curves.items():
        for arm, style in (("rl_co", "-"), ("rl_no_anchor", "--")):
            if arms_curves.get(arm):
                x, y = zip(*arms_curves[arm])
                smooth = np.convolve(y, np.ones(5) / 5, mode="valid") if len(y) >= 5 else np.array(y)
                left.plot(x[len(x) - len(smooth):], smooth, style, label=f"{arm}, seed {seed}")
    left.set(xlabel="PPO iteration", ylabel="rollout success (sim, mean of 5 iterations)", title="RL in the fleet loop", ylim=(0, 1))
    left.legend(fontsize=8)
    x = np.arange(len(arms))
    right.bar(x - 0.2, [mean["real-proxy"][a] for a in arms], 0.4, label="real-proxy")
    right.bar(x + 0.2, [mean["sim"][a] for a in arms], 0.4, label="sim")
    right.set_xticks(x, arms)
    right.set(ylabel="evaluation success", ylim=(0, 1), title="final policies")
    right.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)

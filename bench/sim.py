"""Simulation suite: speed, expert success on both variants, and the sim-to-real-proxy gap.

Figures
    rendered_steps_per_s_per_core   env steps per second of one process (one core) with both
                                    96x96 cameras rendered, mean over tasks (per task as well);
                                    baseline: physics alone for the same steps
    expert_success                  {task: success rate} of the scripted expert, sim variant
    expert_success_real_proxy       {task: success rate} on the real-proxy variant
    policy_success_sim              {task: rate} of one multi-task policy trained only on sim
                                    demonstrations (`--demos` per task, trained to convergence).
                                    The gap is measured on a competent sim policy: 40 demos per
                                    task by default, since sim demonstrations are cheap (the
                                    premise of sim-real co-training); 12 leave it too weak on sim
                                    to have much to lose
    policy_success_real_proxy       {task: rate} of that same policy on real-proxy, same seeds
    sim_to_real_drop_points         mean over tasks of (sim - real-proxy) success, in points
    drop_by_shift                   {shift: drop in points} for every size in `--shifts` (the
                                    same policy and seeds), plotted to `--plot`

Episodes run in `--workers` spawned processes (one simulation per process).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import numpy as np

SPEED_STEPS = 300
EVAL_SEED_BASE = 1_000_000  # evaluation seeds never overlap demonstration seeds

_envs: dict = {}  # per worker process: (task, variant, shift) -> env
_policies: dict = {}  # per worker process: checkpoint dir -> policy


def _env(task: str, variant: str, shift: float | None):
    import sim

    key = (task, variant, shift)
    if key not in _envs:
        _envs[key] = sim.make(task, variant=variant, shift=shift if variant != "sim" else None)
    return _envs[key]


def close_envs() -> None:
    """Closes the envs `_env` keeps; for a process that runs these jobs itself (a test), not in a
    pool worker, whose envs live as long as it does."""
    while _envs:
        _envs.popitem()[1].close()


def _run_episode(env, seed: int, choose, options: dict | None = None) -> dict:
    """Runs one episode, `choose(observation) -> action` each step; returns the last step's info
    (its "is_success" says whether the episode succeeded)."""
    obs, _ = env.reset(seed=seed, options=options)
    info = {"is_success": False}
    for _ in range(env.max_steps):
        obs, _, terminated, truncated, info = env.step(choose(obs))
        if terminated or truncated:
            break
    return info


def _policy(checkpoint_dir: str):
    """The checkpointed policy, loaded once per worker process (one torch thread each)."""
    import torch

    from policy import load_checkpoint

    if checkpoint_dir not in _policies:
        torch.set_num_threads(1)
        _policies[checkpoint_dir] = load_checkpoint(Path(checkpoint_dir)).policy
    return _policies[checkpoint_dir]


def _policy_rollout(env, seed: int, checkpoint_dir: str, options: dict | None = None) -> dict:
    """One episode of a checkpointed policy, run as robots run it; returns the last step's info."""
    from policy import PolicyRunner

    runner = PolicyRunner(_policy(checkpoint_dir), seed)
    return _run_episode(env, seed, lambda obs: runner.act(obs["images"], obs["state"], env.instruction), options)


def _expert_episode(job) -> tuple[str, str, bool]:
    """Runs the expert on one seed; returns (task, variant, success)."""
    import sim

    task, variant, shift, seed = job
    env = _env(task, variant, shift)
    expert = sim.make_expert(env)
    return task, variant, bool(_run_episode(env, seed, lambda obs: expert.act(env))["is_success"])


def _demonstration(job):
    """One expert demonstration on the sim variant, as the trainer's EpisodeArrays."""
    from sim.scripted import expert_episode

    task, seed = job
    return expert_episode(_env(task, "sim", None), seed, robot_id="bench")


def _policy_episode(job) -> tuple[str, str, float | None, bool]:
    """Runs the checkpointed policy on one evaluation seed; returns (task, variant, shift, success)."""
    task, variant, shift, seed, checkpoint_dir = job
    info = _policy_rollout(_env(task, variant, shift), seed, checkpoint_dir)
    return task, variant, shift, bool(info["is_success"])


def _rates(results, tasks, variant) -> dict[str, float]:
    rates = {}
    for task in tasks:
        outcomes = [ok for t, v, ok in results if t == task and v == variant]
        rates[task] = round(float(np.mean(outcomes)), 3)
    return rates


def _run_pool(pool, fn, jobs, label: str):
    results, started = [], time.time()
    for i, result in enumerate(pool.imap_unordered(fn, jobs), start=1):
        results.append(result)
        if i % max(1, len(jobs) // 10) == 0 or i == len(jobs):
            print(f"  {label}: {i}/{len(jobs)} ({time.time() - started:.0f} s)", flush=True)
    return results


def measure_speed(tasks: list[str]) -> dict:
    """Rendered env steps/s in this process (one core), and physics alone for the same steps."""
    import mujoco

    import sim

    per_task, physics = {}, {}
    for task in tasks:
        env = sim.make(task)
        expert = sim.make_expert(env)
        env.reset(seed=0)
        started = time.perf_counter()
        for _ in range(SPEED_STEPS):
            _, _, terminated, truncated, _ = env.step(expert.act(env))
            if terminated or truncated:
                env.reset(seed=int(started * 1000) % 1000)
        per_task[task] = SPEED_STEPS / (time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(SPEED_STEPS):
            mujoco.mj_step(env.model, env.data, nstep=env.substeps)
        physics[task] = SPEED_STEPS / (time.perf_counter() - started)
        env.close()
    return {"per_task": per_task, "physics_only": physics}


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="fleet bench sim")
    parser.add_argument("--tasks", default="all", help="comma-separated task names, or all")
    parser.add_argument("--expert-seeds", type=int, default=50)
    parser.add_argument("--demos", type=int, default=40, help="sim demonstrations per task for the sim-only policy")
    parser.add_argument("--updates", type=int, default=8000, help="training updates of the sim-only policy")
    parser.add_argument("--eval-seeds", type=int, default=20, help="evaluation seeds per task and variant")
    parser.add_argument("--shift", type=float, help="real-proxy shift size (default: the frozen default)")
    parser.add_argument("--shifts", default="", help="extra shift sizes to evaluate the same policy at, e.g. 0.5,1.5")
    parser.add_argument("--policy-dir", help="reuse the sim-only policy saved here, or save it here after training")
    parser.add_argument("--plot", default="bench/results/sim_gap.png", help="PNG of success against shift size")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--skip-policy", action="store_true", help="speed and experts only")
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    import sim

    tasks = sorted(sim.TASKS) if args.tasks == "all" else args.tasks.split(",")
    shift = args.shift if args.shift is not None else sim.DEFAULT_SHIFT
    figures: dict = {"tasks": tasks, "real_proxy_shift": shift}

    print(f"speed: {SPEED_STEPS} expert steps per task in one process, two 96x96 cameras", flush=True)
    speed = measure_speed(tasks)
    rendered = float(np.mean(list(speed["per_task"].values())))
    physics = float(np.mean(list(speed["physics_only"].values())))
    figures.update(rendered_steps_per_s_per_core=round(rendered, 1),
                   rendered_steps_per_s_per_task={t: round(v, 1) for t, v in speed["per_task"].items()},
                   physics_only_steps_per_s=round(physics, 1),
                   rendered_vs_physics_only=round(rendered / physics, 3))
    print(f"  rendered {rendered:.0f} steps/s per core; physics alone {physics:.0f} "
          f"(ratio {rendered / physics:.2f}); target 150", flush=True)

    context = multiprocessing.get_context("spawn")
    with context.Pool(args.workers) as pool:
        jobs = [(t, v, shift, seed) for t in tasks for v in sim.VARIANTS for seed in range(args.expert_seeds)]
        results = _run_pool(pool, _expert_episode, jobs, "expert episodes")
        figures["expert_success"] = _rates(results, tasks, "sim")
        figures["expert_success_real_proxy"] = _rates(results, tasks, "real-proxy")
        figures["expert_seeds"] = args.expert_seeds
        print(f"  expert success sim {figures['expert_success']}", flush=True)
        print(f"  expert success real-proxy {figures['expert_success_real_proxy']}", flush=True)
        if args.skip_policy:
            return figures

        with tempfile.TemporaryDirectory() as tmp:
            policy_dir = Path(args.policy_dir or Path(tmp) / "policy")
            if (policy_dir / "meta.json").exists():
                print(f"reusing the sim-only policy in {policy_dir} (delete it to retrain)", flush=True)
            else:
                _train_sim_only_policy(pool, tasks, args, policy_dir, figures)
            shifts = sorted({shift, *(float(v) for v in args.shifts.split(",") if v)})
            jobs = [(t, "sim", None, EVAL_SEED_BASE + seed, str(policy_dir))
                    for seed in range(args.eval_seeds) for t in tasks]
            jobs += [(t, "real-proxy", size, EVAL_SEED_BASE + seed, str(policy_dir))
                     for size in shifts for seed in range(args.eval_seeds) for t in tasks]
            results = _run_pool(pool, _policy_episode, jobs, "policy evaluation episodes")
    on_sim = _rates([(t, v, ok) for t, v, _, ok in results], tasks, "sim")
    by_shift = {size: _rates([(t, v, ok) for t, v, s, ok in results if s == size], tasks, "real-proxy")
                for size in shifts}
    figures["policy_success_sim"] = on_sim
    figures["policy_success_real_proxy"] = by_shift[shift]
    figures["drop_by_shift"] = {str(size): round(100 * float(np.mean([on_sim[t] - rates[t] for t in tasks])), 1)
                                for size, rates in by_shift.items()}
    figures.update(policy_demos_per_task=args.demos, policy_updates=args.updates, policy_eval_seeds=args.eval_seeds,
                   sim_to_real_drop_points=figures["drop_by_shift"][str(shift)])
    _plot_gap(on_sim, by_shift, tasks, Path(args.plot))
    print(f"  sim-only policy: sim {figures['policy_success_sim']}", flush=True)
    print(f"  sim-only policy: real-proxy {figures['policy_success_real_proxy']}", flush=True)
    print(f"  drop on real-proxy: {figures['sim_to_real_drop_points']} points (acceptance: at least 20); "
          f"by shift size: {figures['drop_by_shift']}; plot {args.plot}", flush=True)
    return figures


def _train_sim_only_policy(pool, tasks, args, policy_dir: Path, figures: dict) -> None:
    from learner.trainer import fit_offline
    from policy import save_checkpoint

    demos = _run_pool(pool, _demonstration, [(t, seed) for t in tasks for seed in range(args.demos)],
                      "sim demonstrations")
    demos.sort(key=lambda episode: episode.episode_id)  # the pool returns them in completion order
    print(f"training one policy on {len(demos)} sim demonstrations ({args.updates} updates)...", flush=True)
    started = time.time()
    policy = fit_offline(demos, args.updates)
    figures["policy_train_seconds"] = round(time.time() - started, 1)
    save_checkpoint(policy_dir, policy, version=0)


def _plot_gap(on_sim: dict, by_shift: dict, tasks: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [0.0, *by_shift]
    fig, ax = plt.subplots(figsize=(6, 4))
    for task in tasks:
        ax.plot(sizes, [100 * on_sim[task]] + [100 * by_shift[s][task] for s in by_shift], ".--", alpha=0.7, label=task)
    mean = [100 * np.mean(list(on_sim.values()))] + [100 * np.mean(list(by_shift[s].values())) for s in by_shift]
    ax.plot(sizes, mean, "o-", color="black", label="mean")
    ax.set(xlabel="real-proxy shift size (0 = sim)", ylabel="success (%)", ylim=(0, 100),
           title="Sim-only policy on the real-proxy variant")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

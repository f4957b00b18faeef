"""Data ceiling: is a finished fleet run's data worth more than its version 0's?

On a finished run's store (`--store DIR`, e.g. a demo's OUT/learner), two policies are trained
offline the way version 0 is (from the same base, end to end, the same updates and seed):

    v0_data    the demonstrations alone (what version 0 trained on)
    all_data   the demonstrations plus every fleet episode the algorithm labels (HG-DAgger: the
               intervention segments), with the trainer's sampler and labels

and both run on the same evaluation seeds (bench/sim.py's, not the run's own). If all_data does
not beat v0_data here, more trainer speed cannot make the fleet better: the fault is in the
data or the algorithm (label quality, what the interventions teach), not in the trainer.

Figures: success_v0_data, success_all_data (with 95% intervals), episodes and labelled steps
per arm, gain_points (all_data - v0_data, in points).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
from pathlib import Path

import numpy as np

from bench.sim import EVAL_SEED_BASE, _policy_episode, _run_pool


def _episodes(store: Path, algorithm: str):
    from learner.algorithms.base import make_algorithm
    from learner.store import open_reader

    reader = open_reader(store)
    chooser = make_algorithm(algorithm, None)
    demos, fleet = [], []
    for row in reader.episodes():
        if not row["complete"]:
            continue
        if row["kind"] == "demonstration":
            demos.append(reader.load_episode(row))
        elif chooser.wants_episode(row["kind"], bool(row["success"]), int(row["human_steps"] or 0)):
            fleet.append(reader.load_episode(row))
    reader.close()
    return demos, fleet


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="fleet bench data-ceiling")
    parser.add_argument("--store", required=True, help="a finished run's learner directory (a demo's OUT/learner)")
    parser.add_argument("--algorithm", default="hg_dagger")
    parser.add_argument("--updates", type=int, default=1500, help="updates per arm (the demo's version 0: 1500)")
    parser.add_argument("--eval-seeds", type=int, default=30)
    parser.add_argument("--base", default="default", help="where both arms start (the run's --base)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")

    import torch

    from learner.algorithms.hg_dagger import HUMAN_SOURCES
    from learner.metrics import wilson_interval
    from learner.trainer import TrainerConfig, fit_offline
    from policy import save_checkpoint

    torch.set_num_threads(os.cpu_count() or 1)
    demos, fleet = _episodes(Path(args.store), args.algorithm)
    if not demos:
        raise SystemExit(f"fleet bench data-ceiling: no demonstrations in {args.store}")
    tasks = sorted({e.task for e in demos})
    arms = {"v0_data": demos, "all_data": demos + fleet}
    figures: dict = {"store": str(args.store), "tasks": tasks, "updates": args.updates, "eval_seeds": args.eval_seeds,
                     "seed": args.seed}
    with tempfile.TemporaryDirectory() as tmp, multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        for arm, episodes in arms.items():
            labelled = sum(int(np.isin(e.arrays["source"], HUMAN_SOURCES).sum()) for e in episodes)
            print(f"[{arm}] {len(episodes)} episodes: training {args.updates} updates", flush=True)
            config = TrainerConfig(data_dir=None, seed=args.seed, algorithm=args.algorithm, base=args.base)
            policy = fit_offline(episodes, args.updates, config)
            directory = Path(tmp) / arm
            save_checkpoint(directory, policy, 0, info={"bench": "data-ceiling", "arm": arm})
            jobs = [(task, "sim", None, EVAL_SEED_BASE + s, str(directory)) for task in tasks
                    for s in range(args.eval_seeds)]
            outcomes = [ok for _, _, _, ok in _run_pool(pool, _policy_episode, jobs, f"{arm} evaluation")]
            successes = sum(outcomes)
            figures[f"episodes_{arm}"] = len(episodes)
            figures[f"human_steps_{arm}"] = labelled
            figures[f"success_{arm}"] = round(successes / len(outcomes), 3)
            figures[f"success_ci_{arm}"] = [round(x, 3) for x in wilson_interval(successes, len(outcomes))]
            print(f"[{arm}] success {successes}/{len(outcomes)}", flush=True)
    figures["gain_points"] = round(100 * (figures["success_all_data"] - figures["success_v0_data"]), 1)
    print(f"v0 data {figures['success_v0_data']:.0%}, all data {figures['success_all_data']:.0%} on the same "
          f"{len(outcomes)} seeds: {figures['gain_points']:+.0f} points")
    return figures

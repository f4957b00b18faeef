"""Data ceiling: is a finished fleet run's data worth more than its version 0's?

On a finished run's store (`--store DIR`, e.g. a demo's OUT/learner), two policies are trained
offline from the same base, with the same seed, and run on the same evaluation seeds
(bench/sim.py's, not the run's own):

    v0_data    version 0's recipe on the demonstrations alone: `--updates` end to end
    all_data   the same version 0, then the fleet's own recipe on the demonstrations plus every
               fleet episode the algorithm labels (HG-DAgger: the intervention segments, less the
               operators' hold-still ticks): the encoder frozen, the head trained on cached
               embeddings with the trainer's sampler for as many updates as the run's trainer made
               after version 0 (`--fleet-updates`, default read from the run's last version)

If all_data does not beat v0_data here, more trainer speed cannot make the fleet better: the
fault is in the data or the algorithm (label quality, what the interventions teach), not in the
trainer. If it beats the run's own last version, the fleet's data were worth more than its
online training made of them (the moving average, the order the data arrived in).

Figures: success_v0_data, success_all_data (with 95% intervals), episodes and labelled steps
per arm, fleet_updates, gain_points (all_data - v0_data, in points).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
from pathlib import Path

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


def _fleet_updates(store: Path) -> int:
    """Updates the run's trainer made after version 0 (from its published versions' records)."""
    from learner.versions import VersionRegistry

    registry = VersionRegistry(store)
    try:
        latest = registry.latest()
        if latest is None:
            return 0
        first, last = registry.info(0) or {}, registry.info(latest) or {}
    finally:
        registry.close()
    return max(0, last.get("updates", 0) - first.get("updates", 0))


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="fleet bench data-ceiling")
    parser.add_argument("--store", required=True, help="a finished run's learner directory (a demo's OUT/learner)")
    parser.add_argument("--algorithm", default="hg_dagger")
    parser.add_argument("--updates", type=int, default=1500, help="version 0's updates (the demo's: 1500)")
    parser.add_argument("--fleet-updates", type=int, help="all_data's head updates after version 0 (default: as "
                                                              "many as the run's trainer made)")
    parser.add_argument("--eval-seeds", type=int, default=30)
    parser.add_argument("--base", default="default", help="where both arms start (the run's --base)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")

    import torch

    from learner.algorithms.hg_dagger import human_labels
    from learner.metrics import wilson_interval
    from learner.trainer import Trainer, TrainerConfig
    from policy import save_checkpoint

    torch.set_num_threads(os.cpu_count() or 1)
    store = Path(args.store)
    demos, fleet = _episodes(store, args.algorithm)
    if not demos:
        raise SystemExit(f"fleet bench data-ceiling: no demonstrations in {args.store}")
    fleet_updates = args.fleet_updates if args.fleet_updates is not None else _fleet_updates(store)
    tasks = sorted({e.task for e in demos})
    figures: dict = {"store": str(args.store), "tasks": tasks, "updates": args.updates, "fleet_updates": fleet_updates,
                     "eval_seeds": args.eval_seeds, "seed": args.seed}
    config = TrainerConfig(data_dir=None, seed=args.seed, algorithm=args.algorithm, base=args.base,
                           bootstrap_updates=args.updates)
    trainer = Trainer(config)
    for episode in demos:
        trainer.add_episode(episode, online=False)
    print(f"[v0_data] {len(demos)} demonstrations: training {args.updates} updates", flush=True)
    trainer.train_version_zero()
    with tempfile.TemporaryDirectory() as tmp, multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        for arm, episodes in (("v0_data", demos), ("all_data", demos + fleet)):
            if arm == "all_data":
                for episode in fleet:
                    trainer.add_episode(episode, online=True)
                trainer.start_fleet_training()
                print(f"[all_data] {len(episodes)} episodes: {fleet_updates} updates after version 0", flush=True)
                for i in range(fleet_updates):
                    trainer.train_step()
                    if (i + 1) % 1000 == 0:
                        print(f"  update {i + 1}/{fleet_updates}", flush=True)
            directory = Path(tmp) / arm
            save_checkpoint(directory, trainer.ema, 0, info={"bench": "data-ceiling", "arm": arm})
            jobs = [(task, "sim", None, EVAL_SEED_BASE + s, str(directory)) for task in tasks
                    for s in range(args.eval_seeds)]
            outcomes = [ok for _, _, _, ok in _run_pool(pool, _policy_episode, jobs, f"{arm} evaluation")]
            successes = sum(outcomes)
            figures[f"episodes_{arm}"] = len(episodes)
            figures[f"labelled_steps_{arm}"] = sum(int(human_labels(e.arrays).sum()) for e in episodes)
            figures[f"success_{arm}"] = round(successes / len(outcomes), 3)
            figures[f"success_ci_{arm}"] = [round(x, 3) for x in wilson_interval(successes, len(outcomes))]
            print(f"[{arm}] success {successes}/{len(outcomes)}", flush=True)
    figures["gain_points"] = round(100 * (figures["success_all_data"] - figures["success_v0_data"]), 1)
    print(f"v0 data {figures['success_v0_data']:.0%}, all data {figures['success_all_data']:.0%} on the same "
          f"{len(outcomes)} seeds: {figures['gain_points']:+.0f} points")
    return figures

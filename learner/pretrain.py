"""`fleet pretrain`: a multi-task base policy from broad scripted data.

Recipe: the scripted expert of every listed task (sim/scripted.py) on `episodes` seeds each, in
randomised scenes (every seed places the objects, targets and cues anew), from seed `seed_base`
on (far from the evaluation seeds benchmarks and the demo use); then one policy, conditioned on
each task's instruction, trained end to end on all of it for `updates` updates by the trainer's
own version-0 path (learner/trainer.py). The result is a checkpoint directory whose info records
the recipe, the tasks and the final loss; the project ships the one made by

    fleet pretrain --out policy/bases/tabletop

(the defaults: every sim task but push_cube, the demo's). A base must never see the task a
fleet is measured on; the trainer warns when it has.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TASKS = ("reach", "pick_place", "press_button", "cued_button")

_envs: dict = {}  # per worker process: task -> env


def _episode(job):
    import sim
    from sim.scripted import expert_episode

    task, seed = job
    if task not in _envs:
        _envs[task] = sim.make(task)
    return expert_episode(_envs[task], seed, robot_id="pretrain")


@dataclass
class PretrainRecipe:
    tasks: tuple[str, ...] = DEFAULT_TASKS
    episodes: int = 40           # scripted episodes per task
    updates: int = 6000          # end-to-end updates over all of them
    batch_size: int = 64
    seed: int = 0
    seed_base: int = 500_000     # first scene seed (evaluation seeds lie far below)
    successful_only: bool = True  # a failed expert episode is not a demonstration


def scripted_episodes(recipe: PretrainRecipe, workers: int) -> list:
    jobs = [(task, recipe.seed_base + i) for task in recipe.tasks for i in range(recipe.episodes)]
    episodes, started = [], time.time()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for i, episode in enumerate(pool.imap_unordered(_episode, jobs, chunksize=4), start=1):
            episodes.append(episode)
            if i % max(1, len(jobs) // 10) == 0 or i == len(jobs):
                print(f"  scripted episodes: {i}/{len(jobs)} ({time.time() - started:.0f} s)", flush=True)
    episodes.sort(key=lambda e: (e.task, e.episode_id))
    return episodes


def pretrain(recipe: PretrainRecipe, out: Path, workers: int, device: str = "auto") -> dict:
    import torch

    from learner.trainer import Trainer, TrainerConfig
    from policy import save_checkpoint

    torch.set_num_threads(os.cpu_count() or 1)  # offline: every core is the trainer's
    started = time.time()
    episodes = scripted_episodes(recipe, workers)
    kept = [e for e in episodes if e.success or not recipe.successful_only]
    per_task = {t: sum(e.task == t for e in kept) for t in recipe.tasks}
    print(f"{len(kept)} of {len(episodes)} scripted episodes kept ({per_task}); "
          f"{sum(e.num_steps for e in kept)} steps", flush=True)
    config = TrainerConfig(data_dir=None, bootstrap_updates=recipe.updates, batch_size=recipe.batch_size,
                           seed=recipe.seed, device=device, base="none")
    trainer = Trainer(config)
    for episode in kept:
        trainer.add_episode(episode, online=False)
    loss = trainer.train_version_zero()
    figures = {"tasks": list(recipe.tasks), "episodes_per_task": per_task, "steps": int(sum(e.num_steps for e in kept)),
               "updates": recipe.updates, "batch_size": recipe.batch_size, "seed": recipe.seed,
               "seed_base": recipe.seed_base, "final_loss": round(float(loss), 4), "precision": trainer.precision,
               "minutes": round((time.time() - started) / 60, 1),
               "recipe": "fleet pretrain " + " ".join(_recipe_flags(recipe))}
    save_checkpoint(out, trainer.ema, 0, info=figures)
    size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    figures["size_mb"] = round(size / 1e6, 2)
    print(f"wrote the base to {out} ({figures['size_mb']} MB; final loss {figures['final_loss']}, "
          f"{figures['minutes']} min)", flush=True)
    trainer.batches.close()
    return figures


def _recipe_flags(recipe: PretrainRecipe) -> list[str]:
    return ["--tasks", ",".join(recipe.tasks), "--episodes", str(recipe.episodes), "--updates", str(recipe.updates),
            "--batch-size", str(recipe.batch_size), "--seed", str(recipe.seed)]


def main(argv: list[str] | None = None) -> dict:
    import sim

    parser = argparse.ArgumentParser(prog="fleet pretrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="checkpoint directory to write (policy/bases/tabletop ships)")
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS),
                        help="comma-separated sim tasks to pretrain on (leave out the task a fleet is measured on)")
    parser.add_argument("--episodes", type=int, default=PretrainRecipe.episodes, help="scripted episodes per task")
    parser.add_argument("--updates", type=int, default=PretrainRecipe.updates)
    parser.add_argument("--batch-size", type=int, default=PretrainRecipe.batch_size)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes rendering episodes")
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        tasks = tuple(sim.parse_tasks(args.tasks))
    except ValueError as error:
        raise SystemExit(f"fleet pretrain: {error}") from None
    recipe = PretrainRecipe(tasks=tasks, episodes=args.episodes, updates=args.updates, batch_size=args.batch_size,
                            seed=args.seed)
    return pretrain(recipe, Path(args.out), args.workers, args.device)

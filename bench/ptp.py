"""Past-token prediction: does a long-context policy use its history, and what does caching save?

Every arm learns from the same scripted demonstrations, with the same seed and the same number
of updates, on top of one shared encoder (stage 1: trained end to end with a short context, then
frozen) whose frame embeddings are computed once (stage 2) and shared by every arm's head
(stage 3). The arms differ only in what the head sees and what its loss covers:

    no_history        one frame (obs_steps 1), the current and future tokens
    history_no_ptp    `--context` frames; loss on the current and future tokens only
    ptp               `--context` frames; loss on every token, past ones included
    ptp_verify        the ptp weights, sampling `--candidates` chunks per step and keeping the one
                      whose predicted past tokens match the executed actions

history_no_ptp and ptp see identical batches (the same sampler seed) and differ only in the loss
mask. Every arm is evaluated on the same `--episodes` seeds. For the memory task the cue
alternates left/right, so a policy that cannot know the cue presses the right button in half the
episodes where it presses one: its chance level is half its rate of pressing any button (50% for
a policy that always presses one).

Figures (memory task, cued_button by default)
    success_no_history, success_history_no_ptp, success_ptp, success_ptp_verify
    pressed_any_<arm>          episodes in which the arm pressed either button
    chance_no_history          half of pressed_any_no_history: what ignoring the cue scores
    stage3_samples_per_s       head-only training on cached embeddings (ptp arm)
    end_to_end_samples_per_s   the same long-context policy trained end to end from images,
                               encoder included, at the same batch size (the baseline)
    stage3_speedup             their ratio
    ordinary_task, ordinary_success_no_history, ordinary_success_ptp: the same recipe on a task
                               that needs no memory (PTP should cost nothing there)
    episodes_per_arm, seeds, demos, stage1_updates, head_updates, context, horizon, candidates
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.sim import EVAL_SEED_BASE, _demonstration, _env, _policy_rollout, _run_pool

ARMS = ("no_history", "history_no_ptp", "ptp", "ptp_verify")
ORDINARY_ARMS = ("no_history", "ptp")
COLOURS = {"no_history": "#999", "history_no_ptp": "#c77", "ptp": "#47a", "ptp_verify": "#2a6"}


def _eval_episode(job) -> tuple[str, str, int, bool, bool]:
    """One evaluation episode of a checkpointed arm; returns (task, arm, seed, success, whether
    the memory task's other button was pressed)."""
    task, arm, seed, cue, checkpoint_dir = job
    info = _policy_rollout(_env(task, "sim", None), seed, checkpoint_dir, None if cue is None else {"cue": cue})
    return task, arm, seed, bool(info["is_success"]), bool(info.get("wrong_button_pressed", False))


def _arm_overrides(arm: str, args) -> dict:
    long = dict(obs_steps=args.context, horizon=args.horizon, n_action_steps=args.action_steps)
    if arm == "no_history":  # as many current and future tokens as the long arms, no past
        return dict(obs_steps=1, horizon=args.horizon - args.context + 1, n_action_steps=args.action_steps)
    if arm == "history_no_ptp":
        return dict(long, past_token_prediction=False)
    return dict(long, past_token_prediction=True)


def _train_arms(task: str, arms: tuple[str, ...], demos, args, out: Path, figures: dict, prefix: str) -> dict:
    """Stage 1 once, then each arm's head on the shared cached embeddings; returns arm -> checkpoint dir."""
    import torch

    from learner.trainer import Trainer, TrainerConfig
    from policy import save_checkpoint

    torch.set_num_threads(args.workers)

    def trainer(arm: str) -> Trainer:
        config = TrainerConfig(data_dir=None, seed=args.seed, policy_overrides=_arm_overrides(arm, args),
                               short_context=dict(obs_steps=1, horizon=args.stage1_horizon))
        t = Trainer(config)
        for episode in demos:
            t.add_episode(episode, online=False)
        return t

    print(f"[{task}] stage 1: encoder + head end to end, one frame, {args.stage1_updates} updates", flush=True)
    started = time.time()
    stage1 = trainer("ptp")
    stage1._build_policy()
    stage1.bootstrap(args.stage1_updates)
    encoder = stage1.ema
    figures[f"{prefix}stage1_seconds"] = round(time.time() - started, 1)

    checkpoints, cache = {}, None
    for arm in arms:
        if arm == "ptp_verify":
            continue
        t = trainer(arm)
        started = time.time()
        cache = t.start_head_training(encoder, cache)
        if arm == arms[0]:
            figures[f"{prefix}stage2_seconds"] = round(time.time() - started, 1)
            print(f"[{task}] stage 2: {cache.computed} episodes embedded once (encoder {cache.encoder_id}), "
                  "shared by every arm", flush=True)
        started = time.perf_counter()
        loss = t.bootstrap(args.head_updates)
        seconds = time.perf_counter() - started
        print(f"[{task}] stage 3 {arm}: {args.head_updates} head updates in {seconds:.0f} s, loss {loss:.4f}",
              flush=True)
        if arm == "ptp" and not prefix:
            figures["stage3_samples_per_s"] = round(args.head_updates * t.config.batch_size / seconds, 1)
        checkpoints[arm] = save_checkpoint(out / f"{task}-{arm}", t.ema, version=0)
        if arm == "ptp" and "ptp_verify" in arms:  # the same weights; only the runner's setting differs
            verify = t.ema
            verify.config = dataclasses.replace(verify.config, verify_candidates=args.candidates)
            checkpoints["ptp_verify"] = save_checkpoint(out / f"{task}-ptp_verify", verify, version=0)
        if arm == "ptp" and not prefix:
            figures["end_to_end_samples_per_s"] = _end_to_end_samples_per_s(trainer("ptp"), encoder, args)
    return checkpoints


def _end_to_end_samples_per_s(trainer, encoder, args) -> float:
    """The ptp arm's policy trained end to end (encoder included, images in every batch)."""
    trainer.start_head_training(encoder, end_to_end=True)
    trainer.train_step()  # warm-up
    started = time.perf_counter()
    for _ in range(args.throughput_steps):
        trainer.train_step()
    return round(args.throughput_steps * trainer.config.batch_size / (time.perf_counter() - started), 1)


def _evaluate(pool, task: str, checkpoints: dict, args, cued: bool) -> tuple[dict[str, float], dict[str, float]]:
    """Per arm: success rate, and the rate of pressing either button (success or the wrong one)."""
    jobs = [(task, arm, EVAL_SEED_BASE + i, (i % 2) if cued else None, str(path))
            for i in range(args.episodes) for arm, path in checkpoints.items()]
    results = _run_pool(pool, _eval_episode, jobs, f"{task} evaluation episodes")
    success, pressed = {}, {}
    for arm in checkpoints:
        mine = [(ok, wrong) for _, a, _, ok, wrong in results if a == arm]
        success[arm] = round(float(np.mean([ok for ok, _ in mine])), 3)
        pressed[arm] = round(float(np.mean([ok or wrong for ok, wrong in mine])), 3)
    return success, pressed


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="fleet bench ptp")
    parser.add_argument("--task", default="cued_button", help="the memory task")
    parser.add_argument("--ordinary-task", default="press_button", help="a task without memory ('' to skip)")
    parser.add_argument("--demos", type=int, default=100, help="scripted demonstrations per task")
    parser.add_argument("--stage1-updates", type=int, default=4000)
    parser.add_argument("--head-updates", type=int, default=2000, help="stage-3 updates of every arm")
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes per arm")
    parser.add_argument("--context", type=int, default=16, help="obs_steps To of the long-context arms")
    parser.add_argument("--horizon", type=int, default=24, help="action tokens T of the long-context arms")
    parser.add_argument("--stage1-horizon", type=int, default=16)
    parser.add_argument("--action-steps", type=int, default=2, help="tokens executed per chunk")
    parser.add_argument("--candidates", type=int, default=10, help="self-verification candidates N")
    parser.add_argument("--throughput-steps", type=int, default=5, help="timed end-to-end updates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="bench/results/ptp.png")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")

    figures: dict = {"task": args.task, "demos": args.demos, "stage1_updates": args.stage1_updates,
                     "head_updates": args.head_updates, "context": args.context, "horizon": args.horizon,
                     "candidates": args.candidates, "episodes_per_arm": args.episodes,
                     "seeds": {"train": args.seed, "demonstrations": [0, args.demos - 1],
                               "evaluation": [EVAL_SEED_BASE, EVAL_SEED_BASE + args.episodes - 1]}}
    tasks = [args.task] + ([args.ordinary_task] if args.ordinary_task else [])
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.workers) as pool, tempfile.TemporaryDirectory() as tmp:
        demos = _run_pool(pool, _demonstration, [(t, s) for t in tasks for s in range(args.demos)], "demonstrations")
        demos.sort(key=lambda e: (e.task, int(e.episode_id.rsplit("-", 1)[1])))
        for task in tasks:
            memory = task == args.task
            arms = ARMS if memory else ORDINARY_ARMS
            prefix = "" if memory else "ordinary_"
            checkpoints = _train_arms(task, arms, [d for d in demos if d.task == task], args, Path(tmp), figures, prefix)
            success, pressed = _evaluate(pool, task, checkpoints, args, cued=memory)
            for arm, rate in success.items():
                figures[f"{prefix}success_{arm}"] = rate
                if memory:
                    figures[f"pressed_any_{arm}"] = pressed[arm]
            print(f"[{task}] success: " + ", ".join(f"{arm} {100 * r:.0f}%" for arm, r in success.items()), flush=True)
    if args.ordinary_task:
        figures["ordinary_task"] = args.ordinary_task
    figures["stage3_speedup"] = round(figures["stage3_samples_per_s"] / figures["end_to_end_samples_per_s"], 1)
    b, c, a = figures["success_history_no_ptp"], figures["success_ptp"], figures["success_no_history"]
    figures["ptp_over_history_ratio"] = round(c / b, 2) if b else None
    figures["ptp_over_no_history_points"] = round(100 * (c - a), 1)
    # Chance: a policy that cannot know the cue presses the cued button in half of the episodes
    # where it presses a button at all, so its chance level is half its rate of pressing one.
    figures["chance_no_history"] = round(figures["pressed_any_no_history"] / 2, 3)
    print(f"stage 3 on cached embeddings: {figures['stage3_samples_per_s']} samples/s; end to end "
          f"{figures['end_to_end_samples_per_s']} samples/s: {figures['stage3_speedup']}x (acceptance: at least 5x)")
    print(f"PTP {100 * c:.0f}% vs history without PTP {100 * b:.0f}% (x{figures['ptp_over_history_ratio']}; "
          f"acceptance 1.5x) vs no history {100 * a:.0f}% (+{figures['ptp_over_no_history_points']} points; "
          f"acceptance 15); with verification {100 * figures['success_ptp_verify']:.0f}%")
    print(f"no history: {100 * a:.0f}% against a chance level of {100 * figures['chance_no_history']:.0f}% (it presses a "
          f"button in {100 * figures['pressed_any_no_history']:.0f}% of episodes; 50% with perfect pressing)")
    _plot(figures, Path(args.plot))
    return figures


def _plot(figures: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = figures["episodes_per_arm"]
    panels = [(figures["task"], ARMS, "")]
    if "ordinary_task" in figures:
        panels.append((figures["ordinary_task"], ORDINARY_ARMS, "ordinary_"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for ax, (task, arms, prefix) in zip(axes[0], panels):
        rates = np.array([figures[f"{prefix}success_{arm}"] for arm in arms])
        error = 100 * 1.96 * np.sqrt(rates * (1 - rates) / n)  # normal approximation, 95%
        ax.bar(range(len(arms)), 100 * rates, yerr=error, capsize=4, color=[COLOURS[arm] for arm in arms])
        ax.set_xticks(range(len(arms)), [a.replace("_", "\n") for a in arms], fontsize=8)
        if task == figures["task"]:
            ax.axhline(100 * figures["chance_no_history"], ls="--", color="black", lw=1,
                       label="chance: half of no_history's button presses")
            ax.legend(fontsize=7)
        ax.set(ylim=(0, 100), ylabel="success (%)", title=f"{task} ({n} episodes per arm)")
    fig.suptitle(f"Past-token prediction: context {figures['context']}, {figures['demos']} demos, "
                 f"{figures['head_updates']} head updates", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

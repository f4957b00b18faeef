"""Trainer throughput: the demo's policy and recipe, today's path against the new default.

Both arms train the same version 0 (the demo's policy on `--demos` scripted push_cube
demonstrations) and are then timed on fleet post-training steps at the same batch size, on one
torch thread as the demo's trainer runs:

    end_to_end   the path before issue 23: the policy of then (no base, a two-layer head with a
                 4 x d_model feed-forward), the encoder keeps training, every batch carries images
                 (random-shift augmented, through both camera CNNs), assembled on the training
                 thread, in fp32, the head's decoder run by torch's nn.TransformerDecoder (the
                 implementation it had; the same weights and function as policy/model.py's). It
                 has today's fused AdamW and one-call moving average: if anything it is faster
                 than the old trainer.
    default      the new default: the shipped base, the one-layer head with a 2 x d_model
                 feed-forward, the encoder frozen after version 0, every frame embedded once,
                 the head trained on cached embeddings by policy/model.py's decoder, bf16
                 autocast where the CPU multiplies bf16 in hardware (`--precision auto`), batches
                 assembled on a thread of their own.

The arms alternate (`--rounds` blocks of `--steps` updates each) so that a slow spell of the
machine hits both; each figure is the median over blocks.

Figures
    updates_per_s_end_to_end / updates_per_s_default   fleet post-training updates per second
    samples_per_s_end_to_end / samples_per_s_default   the same times the batch size
    speedup                                            default over end_to_end (acceptance: >= 5)
    ms_per_update_<arm>  {batch, encoder_forward, head_forward, backward, optimizer}: where a
                         step's time goes; batch is the time the step waited for its batch (for
                         the default, what the prefetch thread did not hide)
    publish_s            writing and hashing one version (checkpoint of the averaged weights)
    embed_s              the default's one-off cost: embedding every indexed frame
    ema_lag_updates, ema_lag_s_default   the moving average's lag at the default's rate
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.sim import _demonstration, _run_pool

ARMS = ("end_to_end", "default")
# The demo's policy before issue 23 (trained from scratch): what the baseline arm times.
BEFORE_ISSUE_23 = {"n_layers": 2, "ffn_dim": 512, "keypoint_stride": 4}


class EncoderTimer:
    """Forward time of the policy's encoder modules, by hooks (the rest of a forward is the head's)."""

    def __init__(self, policy):
        self.seconds = 0.0
        self._started: dict[int, float] = {}
        for name in policy.ENCODER_MODULES:
            module = getattr(policy, name)
            # A ModuleDict is never called itself: time the camera encoders inside it.
            for part in module.values() if isinstance(module, torch.nn.ModuleDict) else [module]:
                part.register_forward_pre_hook(self._pre)
                part.register_forward_hook(self._post)

    def _pre(self, module, _inputs):
        self._started[id(module)] = time.perf_counter()

    def _post(self, module, _inputs, _output):
        self.seconds += time.perf_counter() - self._started.pop(id(module))


def _todays_decoder(head) -> None:
    """The head's decoder as torch's nn.TransformerDecoder runs it (the implementation before
    issue 23), holding the same weights: same function, the old speed."""
    layer = head.decoder.layers[0]
    d_model, n_heads = head.d_model, layer.self_attn.n_heads
    decoder = torch.nn.TransformerDecoder(
        torch.nn.TransformerDecoderLayer(d_model, n_heads, dim_feedforward=layer.linear1.out_features, dropout=0.0,
                                         batch_first=True, norm_first=True), len(head.decoder.layers))
    decoder.load_state_dict(head.decoder.state_dict())
    head.decoder = decoder.to(head.position.device)


def _trainer(arm: str, demos, args):
    from learner.trainer import Trainer, TrainerConfig

    config = TrainerConfig(data_dir=None, batch_size=args.batch_size, seed=args.seed, device=args.device,
                           bootstrap_updates=args.bootstrap_updates,
                           encoder="frozen" if arm == "default" else "finetune",
                           precision=args.precision if arm == "default" else "fp32",
                           prefetch=args.prefetch if arm == "default" else 0,
                           base="default" if arm == "default" else "none",
                           policy_overrides={} if arm == "default" else BEFORE_ISSUE_23)
    trainer = Trainer(config)
    for episode in demos:
        trainer.add_episode(episode, online=False)
    trainer.train_version_zero()
    figures = {}
    if arm == "default":
        started = time.perf_counter()
        trainer.freeze_encoder()
        figures["embed_s"] = round(time.perf_counter() - started, 2)
        figures["precision_default"] = trainer.precision
    else:
        _todays_decoder(trainer.policy.head)
        trainer._reset_optimizer()
    trainer.opt.set_learning_rates(config.finetune_lr, config.encoder_lr)
    return trainer, figures


def _timed_block(trainer, encoder: EncoderTimer, steps: int) -> dict[str, float]:
    trainer.train_step()  # the first step of a block may wait for the prefetch thread to start
    before = dict(trainer.step_s, batch=trainer.batches.wait_s, encoder=encoder.seconds)
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    wall = time.perf_counter() - started
    spent = {k: v - before[k] for k, v in dict(trainer.step_s, batch=trainer.batches.wait_s,
                                                encoder=encoder.seconds).items()}
    ms = {"batch": spent["batch"], "encoder_forward": spent["encoder"],
          "head_forward": spent["forward"] - spent["encoder"], "backward": spent["backward"],
          "optimizer": spent["optimizer"]}
    return {"updates_per_s": steps / wall, **{f"ms/{k}": 1000 * v / steps for k, v in ms.items()}}


def _publish_s(trainer) -> float:
    from policy import save_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        save_checkpoint(Path(tmp) / "v", trainer.ema, 1, info={"bench": "trainer"})
        return time.perf_counter() - started


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="fleet bench trainer")
    parser.add_argument("--task", default="push_cube", help="the demo's task")
    parser.add_argument("--demos", type=int, default=12, help="scripted demonstrations (the demo's number)")
    parser.add_argument("--bootstrap-updates", type=int, default=200,
                        help="version-0 updates before timing (the weights' values do not change a step's cost)")
    parser.add_argument("--batch-size", type=int, default=64, help="the demo's batch size, both arms")
    parser.add_argument("--steps", type=int, default=100, help="timed updates per block")
    parser.add_argument("--rounds", type=int, default=3, help="blocks per arm, alternating")
    parser.add_argument("--device", default="cpu", help="the trainer's device (policy/device.py)")
    parser.add_argument("--precision", default="auto", help="the default arm's --precision (the baseline's: fp32)")
    parser.add_argument("--prefetch", type=int, default=2, help="the default arm's prefetch depth (the baseline's: 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the demo's trainer: 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    torch.set_num_threads(args.threads)

    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        demos = _run_pool(pool, _demonstration, [(args.task, s) for s in range(args.demos)], "demonstrations")
    figures: dict = {"task": args.task, "demos": args.demos, "batch_size": args.batch_size, "device": args.device,
                     "threads": args.threads, "steps_per_block": args.steps, "rounds": args.rounds}
    trainers, timers, blocks = {}, {}, {arm: [] for arm in ARMS}
    for arm in ARMS:
        print(f"[{arm}] version 0: {args.bootstrap_updates} updates", flush=True)
        trainers[arm], extra = _trainer(arm, demos, args)
        timers[arm] = EncoderTimer(trainers[arm].policy)
        figures.update(extra)
    for round_ in range(args.rounds):
        for arm in ARMS:
            block = _timed_block(trainers[arm], timers[arm], args.steps)
            blocks[arm].append(block)
            print(f"  round {round_ + 1}/{args.rounds} {arm}: {block['updates_per_s']:.1f} updates/s", flush=True)
    for arm in ARMS:
        rate = statistics.median(b["updates_per_s"] for b in blocks[arm])
        figures[f"updates_per_s_{arm}"] = round(rate, 2)
        figures[f"samples_per_s_{arm}"] = round(rate * args.batch_size, 1)
        figures[f"ms_per_update_{arm}"] = {k.split("/", 1)[1]: round(statistics.median(b[k] for b in blocks[arm]), 2)
                                           for k in blocks[arm][0] if k.startswith("ms/")}
    figures["speedup"] = round(figures["updates_per_s_default"] / figures["updates_per_s_end_to_end"], 2)
    figures["publish_s"] = round(_publish_s(trainers["default"]), 3)
    lag = trainers["default"].opt.ema_lag()
    figures["ema_lag_updates"] = lag["ema_lag_updates"]
    figures["ema_lag_s_default"] = round(lag["ema_lag_updates"] / figures["updates_per_s_default"], 1)
    for trainer in trainers.values():
        trainer.batches.close()
    print(f"end to end {figures['updates_per_s_end_to_end']} updates/s, default {figures['updates_per_s_default']} "
          f"updates/s at batch {args.batch_size}: {figures['speedup']}x (acceptance: at least 5x)")
    for arm in ARMS:
        print(f"  {arm} ms per update: " + ", ".join(f"{k} {v}" for k, v in figures[f"ms_per_update_{arm}"].items()))
    return figures


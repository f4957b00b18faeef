"""FLOAT failure detection: how well it separates failures from successes, and how early.

A partly trained policy (`--demos` scripted demonstrations per task, `--updates` updates: good
enough to succeed often, weak enough to fail often) runs `--episodes` held-out seeds per task.
Every rollout records, at each chunk start (every 8 steps, ARMADA's Ta): the policy's observation
window embedding, `--samples` diffusion samples of its action chunk (same observation, an
independent generator, so the rollout itself is untouched), and a snapshot of the simulator. The
simulator labels each rollout success or failure; a failure's time is the first chunk start from
which the scripted expert, started from that snapshot with the steps left, no longer succeeds.

The rollouts of every task are split in two by seed (alternating): a calibration split and a test
split, shared by every detector. Each detector's per-task threshold is the one with the best
balanced accuracy on the calibration split; FLOAT is also reported with its own deployed rule
(tau = the 95th percentile of its final index over successful calibration rollouts). A detector
"fires" on a rollout when its running score exceeds the threshold at any chunk.

Figures (test split)
    accuracy                 {detector: balanced accuracy}
    auroc, precision, recall {detector: value}; precision and recall with failures as positives
    lead_time_s              {detector: mean seconds from detection to the failure time, over the
                              detected failures (negative: detected after the episode was lost)}
    detected_before_failure  {detector: share of failures detected at or before the failure time}
    timely_accuracy          {detector: balanced accuracy when a failure only counts as caught if
                              the alarm came at or before its failure time (thresholds re-chosen
                              on the calibration split under that rule)}
    float_percentile95       the same figures for FLOAT with its deployed percentile threshold
    test_successes, test_failures, calibration_successes, calibration_failures
    policy_success           success rate of the partly trained policy over all rollouts
    float_ms_per_chunk       time of one FLOAT update (K = 50 candidates), mean over the test split
    float_over_best_baseline_points   FLOAT's balanced accuracy minus the best baseline's

Fleet comparison (`--fleet-minutes`, 0 skips it): the same fleet (robots, operators, task, seeds,
minutes) runs twice as the demo's fleet (harness.fleet), help asked by the fixed rule of the fleet loop (FLOAT
off), then by FLOAT:
    fleet                    {"fixed_rule": {...}, "float": {...}}: success_rate (final evaluated
                              version), human_steps (all training episodes), rohe, training
                              episodes, takeovers per episode, missed_tick_rate, ...
    human_steps_ratio        fixed rule's human steps / FLOAT's
    missed_tick_rate         {"float_off", "float_on"}: control ticks that overran their period
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.float_fleet import _fleet_comparison, _loop_rate
from bench.sim import EVAL_SEED_BASE, _demonstration, _env, _policy, _run_pool

DETECTORS = ("float", "action_variance", "nearest_demo")
HZ = 10.0


def _monitored_rollout(job) -> dict:
    """One held-out rollout with everything the detectors and the failure label need."""
    import torch

    import sim
    from monitor.features import CHUNK_STEPS, window_feature
    from policy import PolicyRunner
    from sim.recovery import failure_step, snapshot

    task, seed, checkpoint_dir, samples = job
    env, policy = _env(task, "sim", None), _policy(checkpoint_dir)
    runner = PolicyRunner(policy, seed)
    generator = torch.Generator().manual_seed(seed)
    text = policy.embed_text(policy.tokenize([env.instruction]))
    features, action_samples, states = [], [], []
    obs, _ = env.reset(seed=seed)
    info, step = {"is_success": False}, 0
    for step in range(env.max_steps):
        chunk_start = step % CHUNK_STEPS == 0
        if chunk_start:
            states.append((step, snapshot(env)))
        action = runner.act(obs["images"], obs["state"], env.instruction)
        if chunk_start:
            window = runner.window(obs["images"], obs["state"])
            features.append(window_feature(window[0].numpy()).astype(np.float32))
            with torch.no_grad():
                drawn = policy.sample_normalized(window.expand(samples, -1, -1, -1), text.expand(samples, -1), generator)
            action_samples.append(drawn.numpy().astype(np.float32))
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    success = bool(info["is_success"])
    lost = None if success else failure_step(env, states, sim.make_expert(env), end=step + 1)
    return dict(task=task, seed=seed, success=success, steps=step + 1, failure_step=lost,
                features=np.stack(features), action_samples=np.stack(action_samples))


def _traces(rollouts: list[dict], detectors: dict) -> dict[str, list[np.ndarray]]:
    """detector name -> one running-score trace (one value per chunk) per rollout."""
    from monitor.detectors import ChunkSignals

    traces: dict[str, list[np.ndarray]] = {name: [] for name in DETECTORS}
    for rollout in rollouts:
        for name in DETECTORS:
            detector = detectors[(name, rollout["task"])]
            detector.reset()
            traces[name].append(np.array([
                detector.update(ChunkSignals(f, s)) for f, s in zip(rollout["features"], rollout["action_samples"])]))
    return traces


def _timely_fired(rollout: dict, trace: np.ndarray, tau: float) -> bool:
    """Fired in time: on a failure, at a chunk start no later than its failure time; on a success,
    at any time (a false alarm is a false alarm whenever it comes)."""
    from monitor.features import CHUNK_STEPS

    above = np.flatnonzero(trace > tau)
    if not len(above):
        return False
    return rollout["success"] or above[0] * CHUNK_STEPS <= rollout["failure_step"]


def _timely_thresholds(rollouts: list[dict], traces: list[np.ndarray], tasks: list[str]) -> dict[str, float]:
    """Per task, the threshold with the best timely balanced accuracy on the calibration split."""
    from monitor.detectors import balanced_accuracy, threshold_candidates

    taus = {}
    for task in tasks:
        picked = [i for i, r in enumerate(rollouts) if r["task"] == task]
        failed = np.array([not rollouts[i]["success"] for i in picked])
        values = np.concatenate([traces[i] for i in picked])
        candidates = threshold_candidates(values)
        if not 0 < failed.sum() < len(failed):
            taus[task] = float(np.median(np.unique(values)))
            continue
        scores = [balanced_accuracy(np.array([_timely_fired(rollouts[i], traces[i], c) for i in picked]), failed)
                  for c in candidates]
        taus[task] = float(candidates[int(np.argmax(scores))])
    return taus


def _evaluate(rollouts: list[dict], traces: list[np.ndarray], taus: dict[str, float]) -> dict:
    from monitor.detectors import auroc, balanced_accuracy
    from monitor.features import CHUNK_STEPS

    failed = np.array([not r["success"] for r in rollouts])
    fired, leads, early = [], [], []
    for rollout, trace in zip(rollouts, traces):
        above = np.flatnonzero(trace > taus[rollout["task"]])
        fired.append(len(above) > 0)
        if len(above) and not rollout["success"]:
            lead = (rollout["failure_step"] - above[0] * CHUNK_STEPS) / HZ
            leads.append(lead)
            early.append(lead >= 0)
    fired = np.array(fired)
    true_positive = (fired & failed).sum()
    return dict(accuracy=round(balanced_accuracy(fired, failed), 3),
                auroc=round(auroc([t.max() for t in traces], failed), 3),
                precision=round(float(true_positive / max(fired.sum(), 1)), 3),
                recall=round(float(true_positive / failed.sum()), 3),
                lead_time_s=round(float(np.mean(leads)), 2) if leads else None,
                detected_before_failure=round(float(np.sum(early) / failed.sum()), 3))


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="fleet bench float")
    parser.add_argument("--tasks", default="reach,press_button,push_cube")
    parser.add_argument("--demos", type=int, default=20, help="scripted demonstrations per task (policy and bank)")
    parser.add_argument("--updates", type=int, default=1500, help="training updates of the partly trained policy")
    parser.add_argument("--min-per-class", type=int, default=100,
                        help="roll out until the test split (and the calibration split) hold this many "
                             "successes and failures")
    parser.add_argument("--max-episodes", type=int, default=600, help="held-out rollouts per task at most")
    parser.add_argument("--batch", type=int, default=40, help="rollouts per task between count checks")
    parser.add_argument("--save", default=None, help="keep the policy and the recorded rollouts in this folder")
    parser.add_argument("--checkpoint", default=None,
                        help="use this saved policy (trained by an earlier run with the same --demos and --seed)")
    parser.add_argument("--load", default=None, help="score rollouts saved earlier with --save (no simulation)")
    parser.add_argument("--rate-robots", type=int, default=4, help="real-time robot loops run at once")
    parser.add_argument("--rate-episodes", type=int, default=10,
                        help="episodes per robot loop for the missed-tick measurement (0 skips it)")
    parser.add_argument("--fleet-minutes", type=float, default=15.0,
                        help="length of each fleet run (fixed rule, then FLOAT); 0 skips the fleet comparison")
    parser.add_argument("--fleet-robots", type=int, default=4)
    parser.add_argument("--fleet-operators", type=int, default=2)
    parser.add_argument("--fleet-task", default="push_cube")
    parser.add_argument("--fleet-out", default=None, help="keep the fleet runs here (default: a temporary folder)")
    parser.add_argument("--samples", type=int, default=8, help="diffusion samples per chunk (action variance)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="bench/results/float.png")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    import sim
    from monitor.detectors import ActionVarianceDetector, NearestDemoDetector, balanced_accuracy, best_threshold
    from monitor.float_detector import FloatDetector

    tasks = sim.parse_tasks(args.tasks)
    figures: dict = {"tasks": tasks, "demos": args.demos, "updates": args.updates, "samples": args.samples,
                     "seeds": {"train": args.seed, "demonstrations": [0, args.demos - 1]}}
    if args.load:
        bank, rollouts = _load(Path(args.load))
    else:
        bank, rollouts = _simulate(args, tasks, figures)
        if args.save:
            _save(Path(args.save), bank, rollouts)
    rollouts.sort(key=lambda r: (r["task"], r["seed"]))
    figures["rollouts"] = len(rollouts)
    figures["seeds"]["rollouts"] = [EVAL_SEED_BASE, max(r["seed"] for r in rollouts)]
    figures["policy_success"] = round(float(np.mean([r["success"] for r in rollouts])), 3)
    figures["policy_success_per_task"] = {t: round(float(np.mean([r["success"] for r in rollouts if r["task"] == t])), 3)
                                          for t in tasks}

    detectors = {}
    for task in tasks:
        task_bank = bank.for_task(task)
        detectors[("float", task)] = FloatDetector(task_bank)
        detectors[("action_variance", task)] = ActionVarianceDetector()
        detectors[("nearest_demo", task)] = NearestDemoDetector(task_bank)
    calibration = [r for r in rollouts if (r["seed"] - EVAL_SEED_BASE) % 2 == 0]
    test = [r for r in rollouts if (r["seed"] - EVAL_SEED_BASE) % 2 == 1]
    for name, split in (("calibration", calibration), ("test", test)):
        figures[f"{name}_successes"] = sum(r["success"] for r in split)
        figures[f"{name}_failures"] = sum(not r["success"] for r in split)
    print(f"calibration split: {figures['calibration_successes']} successes, {figures['calibration_failures']} failures; "
          f"test split: {figures['test_successes']} successes, {figures['test_failures']} failures", flush=True)

    calibration_traces = _traces(calibration, detectors)
    started = time.perf_counter()
    test_traces = _traces(test, detectors)
    chunks = sum(len(r["features"]) for r in test)
    figures["scoring_seconds_test_split"] = round(time.perf_counter() - started, 1)

    results: dict[str, dict] = {}
    thresholds: dict[str, dict] = {}
    for name in DETECTORS:
        taus = {}
        pooled = best_threshold(np.array([t.max() for t in calibration_traces[name]]),
                                np.array([not r["success"] for r in calibration]))
        for task in tasks:
            picked = [i for i, r in enumerate(calibration) if r["task"] == task]
            scores = np.array([calibration_traces[name][i].max() for i in picked])
            failed = np.array([not calibration[i]["success"] for i in picked])
            # A task whose calibration rollouts all failed (or all succeeded) takes the pooled threshold.
            taus[task] = best_threshold(scores, failed) if 0 < failed.sum() < len(failed) else pooled
        thresholds[name] = taus
        results[name] = _evaluate(test, test_traces[name], taus)
    percentile_taus = {}
    for task in tasks:
        finals = [calibration_traces["float"][i][-1] for i, r in enumerate(calibration) if r["task"] == task and r["success"]]
        percentile_taus[task] = float(np.percentile(finals, 95)) if finals else float("inf")
    figures["float_percentile95"] = _evaluate(test, test_traces["float"], percentile_taus)
    for key in ("accuracy", "auroc", "precision", "recall", "lead_time_s", "detected_before_failure"):
        figures[key] = {name: results[name][key] for name in DETECTORS}
    # The stricter reading: a failure counts as caught only if the alarm came no later than the
    # failure time (help asked while the episode could still be saved); thresholds re-chosen on
    # the calibration split under the same rule.
    figures["timely_accuracy"] = {}
    for name in DETECTORS:
        taus = _timely_thresholds(calibration, calibration_traces[name], tasks)
        fired = np.array([_timely_fired(r, t, taus[r["task"]]) for r, t in zip(test, test_traces[name])])
        figures["timely_accuracy"][name] = round(balanced_accuracy(fired, np.array([not r["success"] for r in test])), 3)
    figures["thresholds"] = {name: {t: round(v, 4) for t, v in taus.items()} for name, taus in thresholds.items()}
    best_baseline = max(results[n]["accuracy"] for n in DETECTORS if n != "float")
    figures["float_over_best_baseline_points"] = round(100 * (results["float"]["accuracy"] - best_baseline), 1)
    figures["float_ms_per_chunk"] = _float_ms_per_chunk(test, detectors)
    figures["chunks_scored_test_split"] = chunks
    for name in DETECTORS:
        r = results[name]
        print(f"{name:16s} balanced accuracy {100 * r['accuracy']:.1f}% (in time {100 * figures['timely_accuracy'][name]:.1f}%)  AUROC {r['auroc']:.3f}  precision "
              f"{r['precision']:.2f}  recall {r['recall']:.2f}  lead {r['lead_time_s']} s  "
              f"before failure {100 * r['detected_before_failure']:.0f}%")
    print(f"FLOAT over the best baseline: {figures['float_over_best_baseline_points']:+.1f} points "
          f"(acceptance: FLOAT >= 85% and >= +10)")
    _plot(test, test_traces, figures, Path(args.plot))
    if args.rate_episodes > 0:
        if not args.checkpoint:
            raise SystemExit("fleet bench float: the control-loop measurement needs the policy: pass --checkpoint")
        figures["control_loop"] = _loop_rate(args, Path(args.checkpoint), bank, tasks)
    if args.fleet_minutes > 0:
        figures.update(_fleet_comparison(args))
    return figures


def _split_counts(rollouts: list[dict]) -> tuple[int, int]:
    """The smallest class count of each split: (calibration, test)."""
    counts = []
    for parity in (0, 1):
        split = [r for r in rollouts if (r["seed"] - EVAL_SEED_BASE) % 2 == parity]
        successes = sum(r["success"] for r in split)
        counts.append(min(successes, len(split) - successes))
    return counts[0], counts[1]


def _simulate(args, tasks: list[str], figures: dict):
    """Trains the partly trained policy, builds its bank and rolls it out until both splits hold
    `--min-per-class` successes and failures (or `--max-episodes` per task)."""
    import torch

    from learner.trainer import TrainerConfig, fit_offline
    from monitor.features import build_reference_bank
    from policy import load_checkpoint, save_checkpoint

    context = multiprocessing.get_context("spawn")
    tmp = args.save or tempfile.mkdtemp(prefix="bench-float-")
    with context.Pool(args.workers) as pool:
        demos = _run_pool(pool, _demonstration, [(t, s) for t in tasks for s in range(args.demos)], "demonstrations")
        demos.sort(key=lambda e: (e.task, int(e.episode_id.rsplit("-", 1)[1])))
        torch.set_num_threads(args.workers)
        if args.checkpoint:  # the same demonstrations (same seeds) trained this policy earlier
            checkpoint = Path(args.checkpoint)
            policy = load_checkpoint(checkpoint).policy
        else:
            print(f"training the partly trained policy: {args.updates} updates on {len(demos)} demonstrations",
                  flush=True)
            started = time.time()
            policy = fit_offline(demos, args.updates, TrainerConfig(data_dir=None, seed=args.seed))
            figures["train_seconds"] = round(time.time() - started, 1)
            checkpoint = save_checkpoint(Path(tmp) / "policy", policy, version=0)
        bank = build_reference_bank(policy, demos)
        rollouts: list[dict] = []
        done = 0
        while done < args.max_episodes:
            batch = min(args.batch, args.max_episodes - done)
            jobs = [(t, EVAL_SEED_BASE + i, str(checkpoint), args.samples) for i in range(done, done + batch) for t in tasks]
            rollouts += _run_pool(pool, _monitored_rollout, jobs, f"monitored rollouts {done}-{done + batch} per task")
            done += batch
            calibration, test = _split_counts(rollouts)
            print(f"  {len(rollouts)} rollouts, success {np.mean([r['success'] for r in rollouts]):.0%}; smallest "
                  f"class: calibration {calibration}, test {test} (want {args.min_per_class})", flush=True)
            if min(calibration, test) >= args.min_per_class:
                break
    args.checkpoint = str(checkpoint)  # the loop-rate measurement runs this policy
    return bank, rollouts


def _save(folder: Path, bank, rollouts: list[dict]) -> None:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(bank.as_arrays(), str(folder / "bank.safetensors"))
    arrays = {}
    for i, r in enumerate(rollouts):
        arrays[f"{i}/features"], arrays[f"{i}/action_samples"] = r["features"], r["action_samples"]
        arrays[f"{i}/meta"] = np.array([r["seed"], r["success"], r["steps"], -1 if r["failure_step"] is None else r["failure_step"]])
    save_file(arrays, str(folder / "rollouts.safetensors"),
              metadata={"tasks": "\n".join(r["task"] for r in rollouts)})


def _load(folder: Path):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    from monitor.float_detector import ReferenceBank

    bank = ReferenceBank.from_arrays(load_file(str(folder / "bank.safetensors")))
    with safe_open(str(folder / "rollouts.safetensors"), "np") as f:
        tasks = f.metadata()["tasks"].split("\n")
        rollouts = []
        for i, task in enumerate(tasks):
            seed, success, steps, lost = (int(v) for v in f.get_tensor(f"{i}/meta"))
            rollouts.append(dict(task=task, seed=seed, success=bool(success), steps=steps,
                                 failure_step=None if lost < 0 else lost, features=f.get_tensor(f"{i}/features"),
                                 action_samples=f.get_tensor(f"{i}/action_samples")))
    return bank, rollouts


def _float_ms_per_chunk(rollouts: list[dict], detectors: dict) -> float:
    from monitor.detectors import ChunkSignals

    durations = []
    for rollout in rollouts[:40]:
        detector = detectors[("float", rollout["task"])]
        detector.reset()
        for feature in rollout["features"]:
            started = time.perf_counter()
            detector.update(ChunkSignals(feature))
            durations.append(time.perf_counter() - started)
    return round(1000 * float(np.mean(durations)), 2)


def _plot(rollouts: list[dict], traces: dict, figures: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    failed = np.array([not r["success"] for r in rollouts])
    fig, (roc, index) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in DETECTORS:
        scores = np.array([t.max() for t in traces[name]])
        cuts = np.concatenate([[np.inf], np.sort(np.unique(scores))[::-1], [-np.inf]])
        tpr = [(scores[failed] > c).mean() for c in cuts]
        fpr = [(scores[~failed] > c).mean() for c in cuts]
        roc.plot(fpr, tpr, label=f"{name} (AUROC {figures['auroc'][name]:.2f}, bal. acc. {100 * figures['accuracy'][name]:.0f}%)")
    roc.plot([0, 1], [0, 1], color="#bbb", lw=0.8)
    roc.set(xlabel="false positive rate (successes)", ylabel="true positive rate (failures)",
            title="held-out rollouts: failure detection")
    roc.legend(fontsize=8, loc="lower right")
    for ok, colour, label in ((True, "#2a6", "successes"), (False, "#c44", "failures")):
        for i, (rollout, trace) in enumerate(zip(rollouts, traces["float"])):
            if rollout["success"] == ok and i % 3 == 0:
                index.plot(np.arange(len(trace)) * 0.8, trace, color=colour, alpha=0.25, lw=0.8)
        index.plot([], [], color=colour, label=label)
    index.set(xlabel="time (s)", ylabel="FLOAT index F(t)", title="FLOAT index over an episode (every 3rd test rollout)")
    index.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")

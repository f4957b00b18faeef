"""Soak: N simulated MuJoCo robots against one learner for M minutes.

The learner is the embedded default (`fleet learner`: gRPC, SQLite store, control plane, the
dashboard) serving a published policy; the robots are `fleet robot --sim` processes at their real
10 Hz, with simulated operators answering help requests (the sim's rule), live pictures and
heartbeats. The trainer is left out: it keeps every episode it learns from in memory by design,
so its growth is the data's, not a leak (its memory is measured by the learning benchmarks).

Figures: steps the robots handed to their uplinks vs steps the store holds after the robots
stopped (each complete episode read back and checked step by step), memory (RSS) of every
process over time and its growth after the warm-up, and the p99 ack latency per minute, from
every robot's ack log. Plot: memory and p99 over time.

With `--hostile` the soak runs twice, the second time beside bench/hostile.py (a client that
floods without reading its acknowledgements and sends NaN and impossible shapes): the robots'
p99 ack latency of the two runs, the learner's peak memory, and the NaN steps that reached the
store (none may) are compared.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from harness.learner import LearnerProcess
from harness.processes import spawn_robot, stop_processes

TOKEN = "soak-token-0123456789"


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def publish_policy(data: Path) -> None:
    """A small real policy as version 0, so the robots run it (no trainer in the soak)."""
    from learner.versions import VersionRegistry
    from policy import PolicyConfig, VLAPolicy, save_checkpoint

    config = PolicyConfig(vocab=("push", "the", "red", "cube", "onto", "green", "target"), d_model=32, n_heads=2,
                          n_layers=1, keypoints=8, encoder_image_size=32)
    registry = VersionRegistry(data)
    save_checkpoint(registry.checkpoint_dir(0), VLAPolicy(config).eval(), 0)
    registry.add(0, {"soak": True})
    registry.publish(0, note="soak")
    registry.close()


def read_back(data: Path) -> tuple[int, int, int, int]:
    """The soak robots' (steps stored, complete episodes, incomplete episodes), each complete
    episode checked step by step, and the steps holding a non-finite number in any stored chunk
    of anyone (the hostile client's included, complete or not)."""
    from learner.store import StoreReader

    reader = StoreReader(data)
    robots = [r for r in reader.robots() if r.startswith("soak-")]
    totals = {key: sum(reader.stored_totals(r)[key] for r in robots) for key in ("steps", "incomplete_episodes")}
    complete = [row for row in reader.complete_episodes() if row["robot_id"].startswith("soak-")]
    for row in complete:
        arrays = reader.load_episode(row).arrays
        if not np.array_equal(arrays["step_index"], np.arange(row["num_steps"])):
            raise AssertionError(f"episode {row['episode_id']} does not hold each step once")
    reader.close()
    nan_steps = 0
    for path in (data / "episodes").rglob("*.safetensors"):
        arrays = load_file(str(path))
        nan_steps += int((~np.isfinite(arrays["action"]).all(1) | ~np.isfinite(arrays["state"]).all(1)).sum())
    return int(totals["steps"]), len(complete), int(totals["incomplete_episodes"]), nan_steps


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="fleet bench soak")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--robots", type=int, default=16)
    parser.add_argument("--warmup-minutes", type=float, default=5.0, help="memory growth is measured after this")
    parser.add_argument("--sample-s", type=float, default=15.0, help="memory sampling interval")
    parser.add_argument("--task", default="push_cube")
    parser.add_argument("--plot", help="write memory and p99 over time to this PNG")
    parser.add_argument("--hostile", action="store_true",
                        help="run the soak a second time beside a hostile client (bench/hostile.py) and compare")
    args = parser.parse_args(argv)
    figures = run_arm(args, hostile=False)
    if args.hostile:
        beside = run_arm(argparse.Namespace(**{**vars(args), "plot": None}), hostile=True)
        figures["hostile"] = {key: beside[key] for key in (
            "ack_p99_ms", "ack_p50_ms", "steps_lost", "memory_mb_learner", "learner_rss_max_mb", "nan_steps_stored",
            "hostile_client")}
        figures["hostile_ack_p99_ratio"] = round(beside["ack_p99_ms"] / figures["ack_p99_ms"], 2)
        figures["hostile_learner_rss_extra_mb"] = round(beside["learner_rss_max_mb"] - figures["learner_rss_max_mb"], 1)
        print(f"soak beside a hostile client: the robots' ack p99 {beside['ack_p99_ms']} ms against "
              f"{figures['ack_p99_ms']} ms without it (x{figures['hostile_ack_p99_ratio']}); learner memory at most "
              f"{beside['learner_rss_max_mb']:.0f} MB against {figures['learner_rss_max_mb']:.0f} MB; "
              f"{beside['nan_steps_stored']} NaN steps stored; the client's answers {beside['hostile_client']}",
              flush=True)
    return figures


def run_arm(args: argparse.Namespace, hostile: bool) -> dict:
    """One soak; with `hostile`, the hostile client runs beside the robots the whole time."""
    warmup = min(args.warmup_minutes, args.minutes / 3)
    with tempfile.TemporaryDirectory(prefix="fleet-soak-") as tmp:
        root = Path(tmp)
        data, logs = root / "learner", root / "logs"
        logs.mkdir()
        (root / "tokens").write_text(TOKEN + "\n")
        data.mkdir()
        publish_policy(data)
        learner = LearnerProcess(data, root / "tokens", logs / "learner.log", dashboard_port=0,
                                 extra=["--no-train", "--operators", "2"]).start()
        robots = [spawn_robot(learner.address, f"soak-{i}", args.task, root / "tokens", root / "robots" / f"soak-{i}",
                              logs / f"soak-{i}.log", ["--help-gate", "rule", "--preview-hz", "2", "--ack-log",
                                                       "--seed", str(i)]) for i in range(args.robots)]
        if hostile:
            hostile_proc = subprocess.Popen(
                [sys.executable, "-m", "bench.hostile", "--learner", learner.address, "--token-file",
                 str(root / "tokens"), "--seconds", str(args.minutes * 60), "--out", str(root / "hostile.json")],
                stdout=open(logs / "hostile.log", "w"), stderr=subprocess.STDOUT)
        print(f"soak: {args.robots} robots at 10 Hz against one learner for {args.minutes:g} min "
              f"(memory growth measured after {warmup:g} min){' beside a hostile client' if hostile else ''}...",
              flush=True)
        started = time.time()
        memory: dict[str, list[tuple[float, float]]] = {"learner": []}
        for i in range(args.robots):
            memory[f"soak-{i}"] = []
        processes = {"learner": learner.proc, **{f"soak-{i}": p for i, p in enumerate(robots)}}
        next_report = started + 60
        while time.time() - started < args.minutes * 60:
            elapsed = time.time() - started
            for name, proc in processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} after {elapsed:.0f} s; see its log")
                value = rss_mb(proc.pid)
                if value is not None:
                    memory[name].append((elapsed, value))
            if time.time() >= next_report:
                robots_mb = np.mean([memory[f"soak-{i}"][-1][1] for i in range(args.robots)])
                print(f"  {elapsed / 60:5.1f}/{args.minutes:g} min: learner {memory['learner'][-1][1]:.0f} MB, "
                      f"robots {robots_mb:.0f} MB each on average", flush=True)
                next_report += 60
            time.sleep(args.sample_s)
        # A robot ends its episode, drains its spool and writes its stats: the figures need every one.
        stop_processes(robots, 120, kill=False)
        if hostile:
            hostile_proc.wait(60)
        learner.stop(60, kill=False)
        sent = sum(json.loads((root / "robots" / f"soak-{i}" / "stats.json").read_text())["steps_spooled"]
                   for i in range(args.robots))
        left = sum(len(list((root / "robots" / f"soak-{i}" / "spool").glob("*.chunk"))) for i in range(args.robots))
        stored, complete, incomplete, nan_steps = read_back(data)
        acks = np.concatenate([np.loadtxt(root / "robots" / f"soak-{i}" / "acks.csv", delimiter=",", ndmin=2)
                               for i in range(args.robots)])
        minutes = ((acks[:, 0] - started) // 60).astype(int)
        p99_by_minute = {int(m): round(float(np.percentile(acks[minutes == m, 1], 99)), 1)
                         for m in sorted(set(minutes)) if m < args.minutes}

        def growth(series: list[tuple[float, float]]) -> float:
            after = [v for t, v in series if t >= warmup * 60]
            first = float(np.median(after[:4]))
            last = float(np.median(after[-4:]))
            return last / first - 1

        growths = {name: growth(series) for name, series in memory.items()}
        worst = max(growths, key=growths.get)
        figures = {
            "robots": args.robots, "minutes": args.minutes, "warmup_minutes": warmup,
            "steps_sent": int(sent), "steps_stored": stored, "steps_lost": int(sent - stored),
            "chunks_left_in_spools": left, "episodes_complete": complete, "episodes_incomplete": incomplete,
            "memory_mb_learner": {"after_warmup": round(next(v for t, v in memory["learner"] if t >= warmup * 60), 1),
                                  "end": round(memory["learner"][-1][1], 1)},
            "memory_growth_learner": round(growths["learner"], 4),
            "memory_growth_robots_max": round(max(v for k, v in growths.items() if k != "learner"), 4),
            "memory_growth_worst_process": worst, "memory_growth_max": round(growths[worst], 4),
            "ack_p99_ms_by_minute": p99_by_minute,
            "ack_p99_ms": round(float(np.percentile(acks[:, 1], 99)), 1),
            "ack_p50_ms": round(float(np.percentile(acks[:, 1], 50)), 1),
            "learner_rss_max_mb": round(max(v for _, v in memory["learner"]), 1),
            "nan_steps_stored": nan_steps,
        }
        if hostile:
            figures["hostile_client"] = json.loads((root / "hostile.json").read_text())
        if args.plot:
            plot(memory, p99_by_minute, warmup, args.plot)
        print(f"soak: {sent} steps sent, {stored} stored ({sent - stored} lost), {left} chunks left in spools; "
              f"memory growth after warm-up: learner {growths['learner']:+.1%}, worst {worst} {growths[worst]:+.1%}; "
              f"ack p99 {figures['ack_p99_ms']} ms", flush=True)
        return figures


def plot(memory: dict, p99_by_minute: dict, warmup: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for name, series in memory.items():
        t = np.array([s[0] for s in series]) / 60
        v = np.array([s[1] for s in series])
        top.plot(t, v, lw=2.0 if name == "learner" else 0.6, color="C0" if name == "learner" else "0.6",
                 label=name if name in ("learner", "soak-0") else None)
    top.axvline(warmup, ls="--", color="k", lw=0.8)
    top.set_ylabel("RSS (MB)")
    top.legend(["learner", "robots"])
    top.set_title("memory of every process (dashed: end of warm-up)")
    bottom.plot([m + 0.5 for m in p99_by_minute], list(p99_by_minute.values()), marker="o")
    bottom.set_ylabel("ack p99 (ms)")
    bottom.set_xlabel("minutes")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)

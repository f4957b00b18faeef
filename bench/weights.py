"""Weight propagation: publish a version to every robot running the previous one.

Each robot is its own process running the real Uplink (WatchPolicy, chunked FetchWeights,
sha256 checks, checkpoint load into a standby policy) beside a 10 Hz control tick; the tick
counts overruns while the download, load and swap happen. Figure: seconds from publication until
the last robot holds the new version loaded and swapped in. Baseline in the same run: the same
publication to a single robot.

With `--trainable-fraction F`: delta weight sync. Robots hold version 0; version 1 changes F of
the policy's bytes (robots fetch only those tensors), version 2 changes all of them (what every
version costs a robot without delta sync). Figures: bytes per robot and propagation of each, and
their ratios (`bytes_ratio` is full over delta).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np

from core import wire

TOKEN = "bench-token"
CONTROL_HZ = 10.0


def _policy_config(model_mb: float):
    from policy import PolicyConfig

    # A decoder layer holds ~16 d^2 float32 parameters; two layers give the requested size.
    d_model = int(((model_mb * 1e6 / 4) / (2 * 16)) ** 0.5) // 8 * 8
    return PolicyConfig(d_model=d_model, n_heads=8, n_layers=2, vocab=("push",))


def _publish(data_dir: Path, version: int, model_mb: float, policy=None) -> float:
    """Publishes `policy` (default: a fresh one of about `model_mb`) as `version`; returns when."""
    from learner.versions import VersionRegistry
    from policy import VLAPolicy, save_checkpoint

    registry = VersionRegistry(data_dir)
    save_checkpoint(registry.checkpoint_dir(version), policy or VLAPolicy(_policy_config(model_mb)).eval(), version)
    registry.add(version, {"bench": True})
    published = time.time()
    registry.publish(version, note="bench")
    registry.close()
    return published


def _robot(address: str, robot_id: str, work_dir: str, expect_versions: int, results) -> None:
    import torch

    from fleet.v1 import fleet_pb2 as pb
    from robot_client.uplink import Uplink, UplinkConfig

    torch.set_num_threads(1)
    embodiment = wire.embodiment_to_proto("bench", {"front": (96, 96, 3)}, 7, 4, CONTROL_HZ)
    uplink = Uplink(UplinkConfig(address=address, token=TOKEN, robot_id=robot_id, spool_dir=Path(work_dir) / "spool",
                                 weights_dir=Path(work_dir) / "weights"),
                    embodiment, {"push_cube": "push"}, lambda: pb.Heartbeat(robot_id=robot_id))
    running = {"checkpoint": None}
    uplink.running_version = lambda: running["checkpoint"].version if running["checkpoint"] else -1
    uplink.start()
    swapped_at: dict[int, float] = {}
    fetched: dict[int, int] = {}  # version -> bytes it took over the wire
    missed: dict[int, int] = {}
    period = 1.0 / CONTROL_HZ
    next_tick = time.perf_counter()
    deadline = time.time() + 600
    while len(swapped_at) < expect_versions and time.time() < deadline:
        # The control tick: swap is a reference assignment between "episodes" (every tick here).
        standby = uplink.standby.take()
        if standby is not None:
            running["checkpoint"] = standby
            swapped_at[standby.version] = time.time()
            fetched[standby.version] = uplink.weights_fetched[0]  # set before the version was staged
        version = running["checkpoint"].version if running["checkpoint"] else -1
        next_tick += period
        delay = next_tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            missed[version + 1] = missed.get(version + 1, 0) + 1  # overran while waiting for the next one
            next_tick = time.perf_counter()
    uplink.stop()
    results.put((robot_id, swapped_at, missed, fetched))


def _serve(data_dir: str, token_file: str, port_queue, stop_event) -> None:
    import asyncio

    from learner.server import Learner, LearnerConfig

    async def main():
        learner = Learner(LearnerConfig(data_dir=Path(data_dir), host="127.0.0.1", port=0,
                                        token_file=Path(token_file), train=False, insecure=True))
        port_queue.put(await learner.start())
        while not stop_event.is_set():
            await asyncio.sleep(0.1)
        await learner.stop()

    asyncio.run(main())


@contextlib.contextmanager
def _fleet(robots: int, versions: int, version_zero):
    """A learner without a trainer serving what `version_zero(data_dir)` publishes, and `robots`
    robot processes that each report once they have swapped in `versions` versions. Yields
    (work dir, data dir, outcomes); outcomes (one (robot id, swapped_at, missed, fetched) per
    robot) are filled when the block ends."""
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "tokens").write_text(TOKEN + "\n")
        data_dir = tmp / "learner"
        data_dir.mkdir()
        version_zero(data_dir)
        port_queue, stop_event, results = ctx.Queue(), ctx.Event(), ctx.Queue()
        server = ctx.Process(target=_serve, args=(str(data_dir), str(tmp / "tokens"), port_queue, stop_event))
        server.start()
        address = f"127.0.0.1:{port_queue.get(timeout=60)}"
        procs = [ctx.Process(target=_robot, args=(address, f"bench-{i}", str(tmp / f"r{i}"), versions, results))
                 for i in range(robots)]
        for p in procs:
            p.start()
        outcomes: list = []
        yield tmp, data_dir, outcomes
        outcomes.extend(results.get(timeout=900) for _ in procs)
        for p in procs:
            p.join()
        stop_event.set()
        server.join(30)


def _wait_for_caches(tmp: Path, robots: int, version: int, timeout_s: float = 600) -> None:
    """Until every robot holds `version` (robots report only at the end, so this polls their caches)."""
    deadline = time.time() + timeout_s
    while not all((tmp / f"r{i}" / "weights" / f"v{version:06d}").exists() for i in range(robots)):
        if time.time() > deadline:
            raise RuntimeError(f"robots did not all fetch version {version} in {timeout_s:g} s")
        time.sleep(0.2)


def _propagation(outcomes: list, version: int, published: float) -> tuple[float, int]:
    """(seconds from publication until the last robot swapped `version` in, control ticks missed
    meanwhile and while waiting for the next one)."""
    arrivals = [o[1].get(version) for o in outcomes]
    if any(a is None for a in arrivals):
        raise RuntimeError(f"a robot never received version {version}")
    return max(arrivals) - published, sum(o[2].get(version, 0) + o[2].get(version + 1, 0) for o in outcomes)


def _version_mb(data_dir: Path, version: int) -> float:
    return sum(f.stat().st_size for f in (data_dir / "checkpoints" / f"v{version:06d}").rglob("*") if f.is_file()) / 1e6


def run_arm(robots: int, model_mb: float) -> dict:
    with _fleet(robots, 2, lambda data_dir: _publish(data_dir, 0, 1.0)) as (tmp, data_dir, outcomes):  # a small v0
        _wait_for_caches(tmp, robots, 0, timeout_s=300)
        time.sleep(2.0)
        published = _publish(data_dir, 1, model_mb)
        size_mb = _version_mb(data_dir, 1)
    propagation_s, missed = _propagation(outcomes, 1, published)
    return {"propagation_s": propagation_s, "model_mb": size_mb, "missed_ticks": missed}


def _retrain(policy, fraction: float) -> int:
    """Changes the last tensors of `policy` (in state-dict order, the head's) until `fraction` of
    its bytes differ, as fine-tuning only part of a policy would; returns the bytes changed."""
    import torch

    tensors = [t for t in policy.state_dict().values() if t.is_floating_point()]
    total = sum(t.numel() * t.element_size() for t in tensors)
    changed = 0
    with torch.no_grad():
        for tensor in reversed(tensors):
            if changed >= fraction * total:
                break
            tensor.add_(0.01)
            changed += tensor.numel() * tensor.element_size()
    return changed


def run_delta_arm(robots: int, model_mb: float, fraction: float) -> dict:
    """Robots hold version 0; version 1 changes `fraction` of the bytes (delta sync fetches those),
    version 2 changes every tensor (what every version costs without delta sync)."""
    from policy import VLAPolicy

    policy = VLAPolicy(_policy_config(model_mb)).eval()
    published = {}
    with _fleet(robots, 3, lambda data_dir: _publish(data_dir, 0, model_mb, policy)) as (tmp, data_dir, outcomes):
        for version, change in ((1, fraction), (2, 1.0)):
            _wait_for_caches(tmp, robots, version - 1)
            time.sleep(2.0)
            changed = _retrain(policy, change)
            published[version] = _publish(data_dir, version, model_mb, policy)
            print(f"weights: version {version} changes {changed / 1e6:.1f} MB", flush=True)
        figures = {"model_mb": _version_mb(data_dir, 1)}
    for version, arm in ((1, "delta"), (2, "full")):
        figures[f"{arm}_propagation_s"], figures[f"{arm}_missed_ticks"] = _propagation(outcomes, version,
                                                                                       published[version])
        figures[f"{arm}_bytes_per_robot"] = float(np.mean([o[3][version] for o in outcomes]))
    return figures


def delta_figures(args) -> dict:
    print(f"weights: delta sync, {args.model_mb:g} MB policy, {args.trainable_fraction:g} of it retrained, "
          f"{args.robots} robots...", flush=True)
    arm = run_delta_arm(args.robots, args.model_mb, args.trainable_fraction)
    figures = {
        "robots": args.robots, "model_mb": round(arm["model_mb"], 1), "trainable_fraction": args.trainable_fraction,
        "full_bytes_per_robot": int(arm["full_bytes_per_robot"]),
        "delta_bytes_per_robot": int(arm["delta_bytes_per_robot"]),
        "bytes_ratio": round(arm["full_bytes_per_robot"] / arm["delta_bytes_per_robot"], 2),
        "full_propagation_s": round(arm["full_propagation_s"], 2),
        "delta_propagation_s": round(arm["delta_propagation_s"], 2),
        "propagation_ratio": round(arm["full_propagation_s"] / arm["delta_propagation_s"], 2),
        "delta_missed_ticks": arm["delta_missed_ticks"], "full_missed_ticks": arm["full_missed_ticks"],
    }
    print(f"per robot: {figures['delta_bytes_per_robot'] / 1e6:.1f} MB with delta sync against "
          f"{figures['full_bytes_per_robot'] / 1e6:.1f} MB whole ({figures['bytes_ratio']}x fewer bytes); all "
          f"{args.robots} robots in {figures['delta_propagation_s']} s against {figures['full_propagation_s']} s; "
          f"missed control ticks {figures['delta_missed_ticks']} / {figures['full_missed_ticks']}")
    return figures


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="fleet bench weights")
    parser.add_argument("--robots", type=int, default=16)
    parser.add_argument("--model-mb", type=float, default=100.0)
    parser.add_argument("--trainable-fraction", type=float,
                        help="delta sync: a version that changes this fraction of the policy's bytes against one "
                        "that changes all of them, to the same robots (bytes per robot and propagation)")
    args = parser.parse_args(argv)
    if args.trainable_fraction is not None:
        if not 0 < args.trainable_fraction <= 1:
            parser.error("--trainable-fraction must be in (0, 1]")
        return delta_figures(args)
    print(f"weights: publishing a {args.model_mb:g} MB version to {args.robots} robots...", flush=True)
    fleet = run_arm(args.robots, args.model_mb)
    print("weights: baseline, the same publication to one robot...", flush=True)
    single = run_arm(1, args.model_mb)
    figures = {
        "robots": args.robots,
        "model_mb": round(fleet["model_mb"], 1),
        "propagation_s": round(fleet["propagation_s"], 2),
        "missed_ticks": fleet["missed_ticks"],
        "single_robot_propagation_s": round(single["propagation_s"], 2),
        "single_robot_missed_ticks": single["missed_ticks"],
        "ratio_to_single_robot": round(fleet["propagation_s"] / single["propagation_s"], 2),
    }
    print(f"{figures['model_mb']} MB reached all {args.robots} robots in {figures['propagation_s']} s "
          f"({figures['ratio_to_single_robot']}x one robot's {figures['single_robot_propagation_s']} s); "
          f"missed control ticks during download and swap: {figures['missed_ticks']}")
    return figures

"""Weight propagation: publish a version to every robot running the previous one.

Each robot is its own process running the real Uplink (WatchPolicy, chunked FetchWeights,
sha256 checks, checkpoint load into a standby policy) beside a 10 Hz control tick; the tick
counts overruns while the download, load and swap happen. Figure: seconds from publication until
the last robot holds the new version loaded and swapped in. Baseline in the same run: the same
publication to a single robot.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

from core import wire

TOKEN = "bench-token"
CONTROL_HZ = 10.0


def _policy_config(model_mb: float):
    from policy import PolicyConfig

    # A decoder layer holds ~16 d^2 float32 parameters; two layers give the requested size.
    d_model = int(((model_mb * 1e6 / 4) / (2 * 16)) ** 0.5) // 8 * 8
    return PolicyConfig(d_model=d_model, n_heads=8, n_layers=2, vocab=("push",))


def _publish(data_dir: Path, version: int, model_mb: float) -> float:
    from learner.versions import VersionRegistry
    from policy import VLAPolicy, save_checkpoint

    registry = VersionRegistry(data_dir)
    save_checkpoint(registry.checkpoint_dir(version), VLAPolicy(_policy_config(model_mb)).eval(), version)
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
        version = running["checkpoint"].version if running["checkpoint"] else -1
        next_tick += period
        delay = next_tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            missed[version + 1] = missed.get(version + 1, 0) + 1  # overran while waiting for the next one
            next_tick = time.perf_counter()
    uplink.stop()
    results.put((robot_id, swapped_at, missed))


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


def run_arm(robots: int, model_mb: float) -> dict:
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "tokens").write_text(TOKEN + "\n")
        data_dir = tmp / "learner"
        data_dir.mkdir()
        _publish(data_dir, 0, 1.0)  # robots first run a small version 0
        port_queue, stop_event, results = ctx.Queue(), ctx.Event(), ctx.Queue()
        server = ctx.Process(target=_serve, args=(str(data_dir), str(tmp / "tokens"), port_queue, stop_event))
        server.start()
        address = f"127.0.0.1:{port_queue.get(timeout=60)}"
        procs = [ctx.Process(target=_robot, args=(address, f"bench-{i}", str(tmp / f"r{i}"), 2, results))
                 for i in range(robots)]
        for p in procs:
            p.start()
        outcomes = []
        # Wait until every robot runs version 0 (they report only at the end, so poll their caches).
        deadline = time.time() + 300
        while time.time() < deadline and not all((tmp / f"r{i}" / "weights" / "v000000").exists() for i in range(robots)):
            time.sleep(0.2)
        time.sleep(2.0)
        published = _publish(data_dir, 1, model_mb)
        size = sum(f.stat().st_size for f in (data_dir / "checkpoints" / "v000001").rglob("*") if f.is_file())
        outcomes = [results.get(timeout=600) for _ in procs]
        for p in procs:
            p.join()
        stop_event.set()
        server.join(30)
    arrivals = [o[1].get(1) for o in outcomes]
    if any(a is None for a in arrivals):
        raise RuntimeError("a robot never received version 1")
    return {"propagation_s": max(arrivals) - published, "model_mb": size / 1e6,
            "missed_ticks": sum(o[2].get(1, 0) + o[2].get(2, 0) for o in outcomes)}


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="fleet bench weights")
    parser.add_argument("--robots", type=int, default=16)
    parser.add_argument("--model-mb", type=float, default=100.0)
    args = parser.parse_args(argv)
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

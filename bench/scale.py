"""Scale-out: synthetic robots against 1 and 2 `fleet ingest` replicas sharing one Redis.

Everything runs on this machine: a redis-server started here on a free port (AOF, fsync always,
as deploy/ runs it), the replicas as `fleet ingest` processes on one store directory, and the
robots as asyncio clients in a few processes. A synthetic robot registers, keeps a control
stream with a heartbeat a second, and streams real-sized chunks: 10 steps, each with two 96x96
RGB frames (~560 kB a chunk), episodes of `--episode-chunks` chunks.

1. Throughput: `--robots` robots sending as fast as `--inflight` unacknowledged chunks allow,
   for `--seconds`, against 1 replica (the baseline) and against 2, robots spread over the
   replicas; and, for comparison, against the embedded learner (SQLite, no Redis). Figures per
   arm: acknowledged steps/s, ack latency p50/p99 (send to durable ack).
2. Soak: `--soak-robots` robots at 10 Hz (one chunk a second) for `--soak-minutes` against the
   2 replicas. Figures: steps sent, steps stored (the index's count, and each robot's episodes
   read back), ack p99, steps lost.
Nothing is kept: the store and Redis's files live in a temporary directory removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from fleet.v1 import fleet_pb2 as pb
from fleet.v1 import fleet_pb2_grpc as pb_grpc
from core import wire
from harness.learner import LearnerProcess
from harness.redis_server import INSTALL_HINT, RedisServer

TOKEN = "bench-token"
CAMERAS = {"front": (96, 96, 3), "wrist": (96, 96, 3)}
STEPS_PER_CHUNK = 10


class Cluster:
    """redis-server and K `fleet ingest` replicas on one temporary store; with K = 0, the
    embedded default instead (`fleet learner`, SQLite, no trainer), for comparison."""

    def __init__(self, root: Path, replicas: int):
        self.root = root
        self.servers: list[LearnerProcess] = []
        self.redis_server: RedisServer | None = None
        self.redis = None
        (root / "tokens").write_text(TOKEN + "\n")
        if replicas == 0:
            self.addresses = [self._serve("learner", "embedded", ["--no-train"])]
            return
        if RedisServer.binary() is None:
            sys.exit(f"fleet bench scale needs redis-server ({INSTALL_HINT})")
        self.redis_server = RedisServer(root / "redis").start()
        self.redis_url = self.redis_server.url
        import redis

        self.redis = redis.Redis.from_url(self.redis_url)
        self.addresses = [self._serve("ingest", f"replica-{i}", ["--redis", self.redis_url, "--replica-id",
                                                                 f"replica-{i}"]) for i in range(replicas)]

    def _serve(self, command: str, name: str, extra: list[str]) -> str:
        server = LearnerProcess(self.root / "store", self.root / "tokens", self.root / f"{name}.log", command=command,
                                extra=extra)
        self.servers.append(server)
        return server.start().address

    def stored(self) -> dict[str, int]:
        """Chunks and steps the index holds, each counted once."""
        if self.redis is None:
            from learner.store import StoreReader

            reader = StoreReader(self.root / "store")
            totals = reader.stored_totals()
            reader.close()
            return {"chunks": totals["chunks"], "steps": totals["steps"]}
        from learner.store.redis import stored_totals

        return stored_totals(self.redis)

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()
        for server in reversed(self.servers):  # the replicas before the Redis they write to
            server.stop()
        if self.redis_server is not None:
            self.redis_server.stop(20)


def _template() -> pb.EpisodeChunk:
    rng = np.random.default_rng(0)
    frames = {name: rng.integers(0, 255, shape, dtype=np.uint8) for name, shape in CAMERAS.items()}
    return pb.EpisodeChunk(
        policy_version=0, task="push_cube", instruction="push", kind=pb.EPISODE_KIND_TRAINING,
        steps=[wire.step_to_proto(i, 0.0, frames, np.zeros(7, np.float32), np.zeros(4, np.float32),
                                  np.zeros(4, np.float32), "autonomous", 0.0, False) for i in range(STEPS_PER_CHUNK)])


async def _robot(address: str, robot_id: str, start_at: float, stop_at: float, rate_hz: float | None,
                 inflight: int, episode_chunks: int) -> dict:
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    async with grpc.aio.insecure_channel(address, options=[
            ("grpc.max_send_message_length", wire.MAX_MESSAGE_BYTES)]) as channel:
        stub = pb_grpc.FleetLearnerStub(channel)
        embodiment = wire.embodiment_to_proto("bench", CAMERAS, 7, 4, 10)
        await stub.Register(pb.RegisterRequest(robot_id=robot_id, embodiment=embodiment), metadata=metadata,
                            timeout=30)
        template = _template()
        template.robot_id = robot_id
        window = asyncio.Semaphore(inflight)
        sent_at: dict[tuple[str, int], float] = {}
        counts = {"sent_steps": 0, "acked_steps": 0, "duplicates": 0}
        latencies: list[float] = []

        async def heartbeats():
            step = 0
            while time.time() < stop_at:
                yield pb.RobotMessage(heartbeat=pb.Heartbeat(robot_id=robot_id, sent_at=time.time(),
                                                             mode=pb.ROBOT_MODE_AUTONOMOUS, step_index=step))
                step += 1
                await asyncio.sleep(1.0)

        async def control():
            try:
                async for _ in stub.Control(heartbeats(), metadata=metadata):
                    pass
            except grpc.aio.AioRpcError:
                pass

        async def chunks():
            episode, sequence, tick = 0, 0, start_at
            while True:
                if rate_hz:
                    await asyncio.sleep(max(0.0, tick - time.time()))
                    tick += STEPS_PER_CHUNK / rate_hz
                last = time.time() >= stop_at
                end = last or sequence == episode_chunks - 1
                await window.acquire()
                template.episode_id = f"{robot_id}-{episode}"
                template.sequence = sequence
                template.episode_end = end
                for i, step in enumerate(template.steps):
                    step.index = sequence * STEPS_PER_CHUNK + i
                if end:
                    template.outcome.CopyFrom(pb.EpisodeOutcome(num_steps=(sequence + 1) * STEPS_PER_CHUNK))
                else:
                    template.ClearField("outcome")
                sent_at[(template.episode_id, sequence)] = time.perf_counter()
                counts["sent_steps"] += STEPS_PER_CHUNK
                yield template
                if last:
                    return
                episode, sequence = (episode + 1, 0) if end else (episode, sequence + 1)

        await asyncio.sleep(max(0.0, start_at - time.time()))
        beating = asyncio.create_task(control())
        async for ack in stub.StreamEpisodes(chunks(), metadata=metadata):
            latencies.append(time.perf_counter() - sent_at.pop((ack.episode_id, ack.sequence)))
            counts["acked_steps"] += STEPS_PER_CHUNK
            counts["duplicates"] += ack.status == pb.ACK_STATUS_DUPLICATE
            window.release()
        beating.cancel()
        return {**counts, "unacked_chunks": len(sent_at), "latencies": latencies, "end": time.time()}


def _client_process(jobs: list[tuple[str, str]], start_at: float, stop_at: float, rate_hz: float | None,
                    inflight: int, episode_chunks: int, results) -> None:
    async def main():
        return await asyncio.gather(*(_robot(address, robot_id, start_at, stop_at, rate_hz, inflight, episode_chunks)
                                      for address, robot_id in jobs), return_exceptions=True)

    outcomes = asyncio.run(main())
    results.put([o if isinstance(o, dict) else {"error": repr(o)} for o in outcomes])


def run_robots(cluster: Cluster, robots: int, seconds: float, rate_hz: float | None, inflight: int,
               episode_chunks: int, processes: int, prefix: str) -> dict:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    jobs = [(cluster.addresses[i % len(cluster.addresses)], f"{prefix}-{i}") for i in range(robots)]
    start_at = time.time() + 5.0 + robots * 0.05  # every client connected and registered before the clock starts
    stop_at = start_at + seconds
    workers = [ctx.Process(target=_client_process, args=(jobs[p::processes], start_at, stop_at, rate_hz, inflight,
                                                          episode_chunks, results)) for p in range(processes)]
    for w in workers:
        w.start()
    last_report = time.time()
    outcomes: list[dict] = []
    while len(outcomes) < robots:
        try:
            outcomes += results.get(timeout=5)
        except Exception:
            if time.time() > stop_at + 180:
                raise RuntimeError("the synthetic robots did not finish")
        if time.time() - last_report > 30 and time.time() < stop_at:
            stored = cluster.stored().get("steps", 0)
            print(f"  {time.time() - start_at:5.0f}/{seconds:.0f} s: {stored} steps stored", flush=True)
            last_report = time.time()
    for w in workers:
        w.join()
    errors = [o["error"] for o in outcomes if "error" in o]
    if errors:
        raise RuntimeError(f"{len(errors)} robots failed: {errors[:3]}")
    latencies = np.concatenate([o["latencies"] for o in outcomes]) * 1000
    elapsed = max(o["end"] for o in outcomes) - start_at
    acked = sum(o["acked_steps"] for o in outcomes)
    return {"robots": robots, "steps_per_s": acked / elapsed, "ack_p50_ms": float(np.percentile(latencies, 50)),
            "ack_p99_ms": float(np.percentile(latencies, 99)), "steps_sent": sum(o["sent_steps"] for o in outcomes),
            "steps_acked": acked, "duplicates": sum(o["duplicates"] for o in outcomes),
            "unacked_chunks": sum(o["unacked_chunks"] for o in outcomes), "seconds": elapsed}


def read_back(cluster: Cluster, prefix: str, robots: int) -> int:
    """Steps of the robots' episodes as the index holds them, each episode checked step by step
    on disk: complete, and indices 0..n-1 exactly once."""
    from learner.store.redis import RedisStoreReader

    reader = RedisStoreReader(cluster.root / "store", cluster.redis_url)
    total = 0
    for i in range(robots):
        for row in reader.episodes(f"{prefix}-{i}"):
            if not row.get("complete"):
                raise AssertionError(f"episode {row['episode_id']} is incomplete in the store")
            steps = reader.load_episode(row).arrays["step_index"]
            if not np.array_equal(steps, np.arange(row["num_steps"])):
                raise AssertionError(f"episode {row['episode_id']} does not hold each step once")
            total += len(steps)
    reader.close()
    return total


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="fleet bench scale")
    parser.add_argument("--robots", type=int, default=16, help="throughput arms: robots sending flat out")
    parser.add_argument("--seconds", type=float, default=20.0, help="throughput arms: seconds each")
    parser.add_argument("--inflight", type=int, default=4, help="throughput arms: unacknowledged chunks per robot")
    parser.add_argument("--soak-robots", type=int, default=64)
    parser.add_argument("--soak-minutes", type=float, default=5.0)
    parser.add_argument("--episode-chunks", type=int, default=10, help="chunks (seconds at 10 Hz) per episode")
    parser.add_argument("--processes", type=int, default=4, help="client processes the robots are spread over")
    args = parser.parse_args(argv)
    figures: dict = {"steps_per_s": {}, "ack_p50_ms": {}, "ack_p99_ms": {}}
    for replicas in (0, 1, 2):  # 0: the embedded default, for comparison
        with tempfile.TemporaryDirectory(prefix="fleet-scale-") as tmp:
            cluster = Cluster(Path(tmp), replicas)
            try:
                against = f"{replicas} replica(s) on Redis" if replicas else "the embedded learner (SQLite)"
                print(f"scale: {args.robots} robots flat out for {args.seconds:g} s against {against}...", flush=True)
                arm = run_robots(cluster, args.robots, args.seconds, None, args.inflight, args.episode_chunks,
                                 args.processes, "flat")
                stored = cluster.stored()["steps"]
            finally:
                cluster.close()
        if stored != arm["steps_acked"] or arm["unacked_chunks"]:
            raise AssertionError(f"{replicas} replica(s): {arm['steps_acked']} steps acked, {stored} stored")
        print(f"  {arm['steps_per_s']:.0f} steps/s, ack p50 {arm['ack_p50_ms']:.1f} ms, p99 {arm['ack_p99_ms']:.1f} ms",
              flush=True)
        key = str(replicas) if replicas else "embedded"
        figures["steps_per_s"][key] = round(arm["steps_per_s"], 1)
        figures["ack_p50_ms"][key] = round(arm["ack_p50_ms"], 2)
        figures["ack_p99_ms"][key] = round(arm["ack_p99_ms"], 2)
    figures["ratio_2_to_1"] = round(figures["steps_per_s"]["2"] / figures["steps_per_s"]["1"], 3)
    figures["ratio_1_to_embedded"] = round(figures["steps_per_s"]["1"] / figures["steps_per_s"]["embedded"], 3)
    print(f"scale: 2 replicas give {figures['ratio_2_to_1']:.2f}x the steps/s of 1; 1 replica on Redis "
          f"{figures['ratio_1_to_embedded']:.2f}x the embedded learner", flush=True)

    with tempfile.TemporaryDirectory(prefix="fleet-soak-") as tmp:
        cluster = Cluster(Path(tmp), 2)
        try:
            print(f"soak: {args.soak_robots} robots at 10 Hz (two 96x96 frames a step) for {args.soak_minutes:g} min "
                  f"against 2 replicas...", flush=True)
            soak = run_robots(cluster, args.soak_robots, args.soak_minutes * 60, 10.0, 8, args.episode_chunks,
                              args.processes, "soak")
            indexed = cluster.stored()["steps"]
            read = read_back(cluster, "soak", args.soak_robots)
            disk_mb = sum(f.stat().st_size for f in (Path(tmp) / "store").rglob("*.safetensors")) / 1e6
        finally:
            cluster.close()
    figures.update({
        "robots": args.soak_robots, "soak_minutes": args.soak_minutes, "steps_sent": soak["steps_sent"],
        "steps_stored": indexed, "steps_read_back": read, "steps_lost": soak["steps_sent"] - indexed,
        "soak_steps_per_s": round(soak["steps_per_s"], 1), "soak_ack_p50_ms": round(soak["ack_p50_ms"], 2),
        "soak_ack_p99_ms": round(soak["ack_p99_ms"], 2), "soak_duplicates": soak["duplicates"],
        "soak_store_mb": round(disk_mb, 1), "throughput_robots": args.robots, "throughput_seconds": args.seconds,
        "removed_afterwards": True})
    print(f"soak: {figures['steps_sent']} steps sent, {indexed} stored, {read} read back "
          f"({figures['steps_lost']} lost); ack p99 {figures['soak_ack_p99_ms']} ms; {disk_mb:.0f} MB written and removed",
          flush=True)
    return figures

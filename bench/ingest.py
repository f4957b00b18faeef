"""Ingest: N concurrent robots streaming chunks with camera frames into the real learner.

Each synthetic robot is its own process holding one bidirectional StreamEpisodes stream with
up to `--inflight` unacknowledged chunks; every chunk is 1 s of steps (10 steps, two 96x96 RGB
cameras, ~560 kB). Figures: acknowledged steps/s and MB/s, ack latency p50/p99 (send to durable
ack). Baseline, same clients and payload: a bare gRPC server that acks without decoding or
storing anything, the ceiling of the transport on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

from fleet.v1 import fleet_pb2 as pb
from fleet.v1 import fleet_pb2_grpc as pb_grpc
from core import wire

TOKEN = "bench-token"
OPERATOR_TOKEN = "bench-operator-token-0123456789"
CAMERAS = {"front": (96, 96, 3), "wrist": (96, 96, 3)}


def _chunk_template(robot_id: str, steps: int) -> pb.EpisodeChunk:
    rng = np.random.default_rng(0)
    frames = {name: rng.integers(0, 255, shape, dtype=np.uint8) for name, shape in CAMERAS.items()}
    return pb.EpisodeChunk(
        robot_id=robot_id, policy_version=0, task="push_cube", instruction="push", kind=pb.EPISODE_KIND_TRAINING,
        steps=[wire.step_to_proto(i, 0.0, frames, np.zeros(7, np.float32), np.zeros(4, np.float32),
                                  np.zeros(4, np.float32), "autonomous", 0.0, False) for i in range(steps)])


def scene_picture() -> bytes:
    """A real camera frame (push_cube's front camera, PNG): live pictures are as large as a real
    robot's, not random noise that no PNG can compress."""
    import sim

    env = sim.make("push_cube")
    try:
        observation, _ = env.reset(seed=0)
        return wire.png_image_to_proto("front", observation["images"]["front"]).SerializeToString()
    finally:
        env.close()


def _control_stream(stub, metadata, robot_id: str, stop_at: float, preview_hz: float, picture: bytes) -> None:
    """What a real robot sends besides its episodes: a heartbeat a second and live pictures."""
    picture = pb.Image.FromString(picture)

    def messages():
        step, next_heartbeat = 0, 0.0
        while time.time() < stop_at:
            now = time.time()
            if now >= next_heartbeat:
                next_heartbeat = now + 1.0
                yield pb.RobotMessage(heartbeat=pb.Heartbeat(
                    robot_id=robot_id, sent_at=now, mode=pb.ROBOT_MODE_AUTONOMOUS, episode_id=f"{robot_id}-bench",
                    step_index=step, policy_version=0, task="push_cube", episode_kind=pb.EPISODE_KIND_TRAINING,
                    max_steps=100))
            yield pb.RobotMessage(preview=pb.Preview(
                robot_id=robot_id, image=picture, mode=pb.ROBOT_MODE_AUTONOMOUS,
                episode_id=f"{robot_id}-bench", step_index=step, sent_at=now))
            step += 1
            time.sleep(1.0 / preview_hz)

    try:
        for _ in stub.Control(messages(), metadata=metadata):
            pass
    except grpc.RpcError:
        pass  # the server went away at the end of the run


def _client(address: str, robot_id: str, seconds: float, inflight: int, steps: int, start_at: float, results,
            preview_hz: float = 0.0, picture: bytes = b""):
    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", wire.MAX_MESSAGE_BYTES)])
    stub = pb_grpc.FleetLearnerStub(channel)
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    embodiment = wire.embodiment_to_proto("bench", CAMERAS, 7, 4, 10)
    stub.Register(pb.RegisterRequest(robot_id=robot_id, embodiment=embodiment), metadata=metadata, timeout=10)
    if preview_hz > 0:
        threading.Thread(target=_control_stream, args=(stub, metadata, robot_id, start_at + seconds, preview_hz,
                                                       picture), daemon=True).start()
    template = _chunk_template(robot_id, steps)
    chunk_bytes = template.ByteSize()
    sent_at: dict[int, float] = {}
    window = threading.Semaphore(inflight)
    stop_at = start_at + seconds
    latencies, acked = [], 0

    def requests():
        sequence = 0
        while time.time() < stop_at:
            window.acquire()
            template.episode_id = f"{robot_id}-bench"
            template.sequence = sequence
            sent_at[sequence] = time.perf_counter()
            yield template
            sequence += 1

    while time.time() < start_at:
        time.sleep(0.01)
    for ack in stub.StreamEpisodes(requests(), metadata=metadata):
        latencies.append(time.perf_counter() - sent_at.pop(ack.sequence))
        acked += 1
        window.release()
    channel.close()
    results.put((acked, chunk_bytes, latencies))


class _BareServicer(pb_grpc.FleetLearnerServicer):
    """Acks every chunk at once: no decoding, no storage. The transport's ceiling."""

    async def Register(self, request, context):
        return pb.RegisterResponse(max_message_bytes=wire.MAX_MESSAGE_BYTES)

    async def StreamEpisodes(self, request_iterator, context):
        async for chunk in request_iterator:
            yield pb.ChunkAck(robot_id=chunk.robot_id, episode_id=chunk.episode_id, sequence=chunk.sequence,
                              status=pb.ACK_STATUS_STORED)


def _serve(kind: str, data_dir: str, token_file: str, port_queue, stop_event, operator_token_file: str | None = None
           ) -> None:
    async def main():
        if kind == "learner":
            from dashboard.extension import DashboardConfig, OperatorDashboard
            from learner.server import Learner, LearnerConfig

            dashboard = (OperatorDashboard(DashboardConfig(port=0, operator_token_file=Path(operator_token_file)))
                         if operator_token_file else None)
            learner = Learner(LearnerConfig(
                data_dir=Path(data_dir), host="127.0.0.1", port=0, token_file=Path(token_file), train=False, insecure=True),
                extensions=(dashboard,) if dashboard else ())
            port = await learner.start()
            if dashboard:
                port = (port, dashboard.port)
        else:
            server = grpc.aio.server(options=[("grpc.max_receive_message_length", wire.MAX_MESSAGE_BYTES)])
            pb_grpc.add_FleetLearnerServicer_to_server(_BareServicer(), server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
        port_queue.put(port)
        while not stop_event.is_set():
            await asyncio.sleep(0.1)
        if kind == "learner":
            await learner.stop()
        else:
            await server.stop(0)

    asyncio.run(main())


def run_arm(kind: str, robots: int, seconds: float, inflight: int, steps: int, preview_hz: float = 0.0,
            watch=None) -> dict:
    """One measurement. `watch(dashboard_url)`, when given, runs a learner with its dashboard and
    must return a context manager that keeps the page open while the clients stream."""
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as page:
        token_file = Path(tmp) / "tokens"
        token_file.write_text(TOKEN + "\n")
        operator_file = None
        if watch is not None:
            operator_file = Path(tmp) / "operators"
            operator_file.write_text(f"bench {OPERATOR_TOKEN}\n")
        port_queue, stop_event, results = ctx.Queue(), ctx.Event(), ctx.Queue()
        server = ctx.Process(target=_serve, args=(kind, str(Path(tmp) / "store"), str(token_file), port_queue,
                                                  stop_event, str(operator_file) if operator_file else None))
        server.start()
        port = port_queue.get(timeout=60)
        start_at = time.time() + 3.0  # every client connected and registered before the clock starts
        if watch is not None:
            port, dashboard_port = port
            start_at += 5.0  # and the page loaded
        picture = scene_picture() if preview_hz > 0 else b""
        clients = [ctx.Process(target=_client, args=(f"127.0.0.1:{port}", f"bench-{i}", seconds, inflight, steps,
                                                     start_at, results, preview_hz, picture)) for i in range(robots)]
        for c in clients:
            c.start()
        if watch is not None:
            page.enter_context(watch(f"http://127.0.0.1:{dashboard_port}/?token={OPERATOR_TOKEN}", robots))
        outcomes = [results.get(timeout=seconds + 120) for _ in clients]
        elapsed = time.time() - start_at
        for c in clients:
            c.join()
        stop_event.set()
        server.join(30)
    acked = sum(o[0] for o in outcomes)
    chunk_bytes = outcomes[0][1]
    latencies = np.concatenate([o[2] for o in outcomes]) * 1000
    return {"steps_per_s": acked * steps / elapsed, "mb_per_s": acked * chunk_bytes / elapsed / 1e6,
            "ack_p50_ms": float(np.percentile(latencies, 50)), "ack_p99_ms": float(np.percentile(latencies, 99)),
            "chunks": acked}


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="fleet bench ingest")
    parser.add_argument("--robots", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--inflight", type=int, default=4, help="unacknowledged chunks per robot")
    parser.add_argument("--steps-per-chunk", type=int, default=10)
    args = parser.parse_args(argv)
    print(f"ingest: {args.robots} robots x {args.seconds:g} s into the learner (SQLite + fsync)...", flush=True)
    stored = run_arm("learner", args.robots, args.seconds, args.inflight, args.steps_per_chunk)
    print("ingest: same clients against a bare gRPC server (no storage)...", flush=True)
    bare = run_arm("bare", args.robots, args.seconds, args.inflight, args.steps_per_chunk)
    figures = {
        "robots": args.robots,
        "steps_per_s": round(stored["steps_per_s"], 1),
        "mb_per_s": round(stored["mb_per_s"], 1),
        "ack_p50_ms": round(stored["ack_p50_ms"], 2),
        "ack_p99_ms": round(stored["ack_p99_ms"], 2),
        "ceiling_mb_per_s": round(bare["mb_per_s"], 1),
        "ceiling_ack_p50_ms": round(bare["ack_p50_ms"], 2),
        "ratio_to_ceiling": round(stored["mb_per_s"] / bare["mb_per_s"], 3),
        "seconds": args.seconds,
        "steps_per_chunk": args.steps_per_chunk,
    }
    print(f"stored {figures['mb_per_s']} MB/s = {figures['ratio_to_ceiling']:.0%} of the bare gRPC ceiling "
          f"{figures['ceiling_mb_per_s']} MB/s; ack p50 {figures['ack_p50_ms']} ms, p99 {figures['ack_p99_ms']} ms")
    return figures

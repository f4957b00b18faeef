"""Our transport against LeRobot's HIL-SERL transport, as shipped, on loopback (LeRobot
environment: `make setup-lerobot`, then `fleet bench transport-vs-lerobot` from it).

Episode data: the same episodes (40 steps, two 96x96 cameras, a 7-value state, a 4-value action)
from one robot for `--seconds`.
- Ours: the real learner (bench/ingest.py): chunks of 1 s on the StreamEpisodes stream, each
  decoded, checked and stored durably (safetensors + SQLite) before its ack.
- LeRobot: its LearnerService (lerobot.rl.learner_service) in a gRPC server built as its learner
  builds it; the client sends each episode as HIL-SERL's actor does: a list of Transition dicts
  (state and next_state with the images as float32 CHW tensors, the action, reward, done,
  complementary info), torch.save'd and sent in 2 MiB chunks on one SendTransitions stream. The
  server's consumer deserialises every payload (bytes_to_transitions); nothing is stored and
  nothing is acknowledged, so the figure is an upper bound for LeRobot.
Figures: steps/s and MB/s (the bytes each side puts on the wire).

Weights: the time for a policy of `--model-mb` to reach one robot.
- Ours: bench/weights.py: publish, the robot's weight stream, hash check, a standby policy built.
- LeRobot: a state dict of the same size, state_to_bytes'd into the parameters queue; the
  client's StreamParameters receives the chunks and bytes_to_state_dict rebuilds it. The service
  pushes at most every `seconds_between_pushes` (4 s in LeRobot's default config); the figure is
  the transfer with that wait set to 0, so the wait as shipped comes on top (0 to 4 s).
"""

from __future__ import annotations

import argparse
import multiprocessing
import threading
import time


STEPS = 40
CAMERAS = ("front", "wrist")


def _episode():
    import torch

    g = torch.Generator().manual_seed(0)
    def state():
        return {"observation.state": torch.rand(7, generator=g),
                **{f"observation.images.{c}": torch.rand(3, 96, 96, generator=g) for c in CAMERAS}}
    states = [state() for _ in range(STEPS + 1)]
    return [{"state": states[t], "action": torch.rand(4, generator=g), "reward": 0.0, "next_state": states[t + 1],
             "done": t == STEPS - 1, "truncated": False,
             "complementary_info": {"is_intervention": torch.tensor(0.0)}} for t in range(STEPS)]


def _lerobot_server(port_queue, stop_event, results, params_bytes_queue):
    import queue
    from concurrent import futures

    import grpc
    from lerobot.rl.learner_service import LearnerService
    from lerobot.transport import services_pb2_grpc
    from lerobot.transport.utils import MAX_MESSAGE_SIZE, bytes_to_transitions

    transitions, parameters, interactions = queue.Queue(), queue.Queue(), queue.Queue()
    shutdown = threading.Event()
    service = LearnerService(shutdown, parameters, 0.0, transitions, interactions, queue_get_timeout=0.01)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
                                  ("grpc.max_send_message_length", MAX_MESSAGE_SIZE)])
    services_pb2_grpc.add_LearnerServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    counts = {"steps": 0, "bytes": 0, "first": None, "last": None}

    def consume():
        while not shutdown.is_set():
            try:
                payload = transitions.get(timeout=0.1)
            except queue.Empty:
                continue
            arrived = time.time()  # before decoding: the first payload's decode counts too
            counts["first"] = counts["first"] or arrived
            counts["steps"] += len(bytes_to_transitions(payload))
            counts["bytes"] += len(payload)
            counts["last"] = time.time()

    threading.Thread(target=consume, daemon=True).start()
    port_queue.put(port)
    while not stop_event.is_set():
        try:
            parameters.put(params_bytes_queue.get(timeout=0.1))
        except Exception:  # noqa: BLE001 - queue.Empty from a multiprocessing queue
            pass
    time.sleep(1.0)  # the consumer finishes what arrived
    shutdown.set()
    server.stop(2)
    results.put(dict(counts))


def _lerobot_sender(address: str, seconds: float, results):
    import grpc
    import torch
    from lerobot.transport import services_pb2, services_pb2_grpc
    from lerobot.transport.utils import grpc_channel_options, send_bytes_in_chunks, transitions_to_bytes

    torch.set_num_threads(1)
    stub = services_pb2_grpc.LearnerServiceStub(grpc.insecure_channel(address, grpc_channel_options()))
    stub.Ready(services_pb2.Empty(), timeout=10)
    episode = _episode()
    sent = {"episodes": 0, "bytes": 0}
    started = time.time()

    def chunks():
        while time.time() - started < seconds:
            payload = transitions_to_bytes(episode)  # serialised per episode, as the actor does
            sent["episodes"] += 1
            sent["bytes"] += len(payload)
            yield from send_bytes_in_chunks(payload, services_pb2.Transition, silent=True)

    stub.SendTransitions(chunks())
    results.put(sent)


class _LeRobotLearner:
    """LeRobot's LearnerService in its own process: address, the parameters queue it pushes from,
    and what its consumer counted once stopped."""

    def __init__(self):
        self.ctx = multiprocessing.get_context("spawn")
        port_queue, self.stop_event, self.results, self.params = (self.ctx.Queue(), self.ctx.Event(), self.ctx.Queue(),
                                                                  self.ctx.Queue())
        self.process = self.ctx.Process(target=_lerobot_server, args=(port_queue, self.stop_event, self.results,
                                                                      self.params))
        self.process.start()
        self.address = f"127.0.0.1:{port_queue.get(timeout=60)}"

    def stop(self) -> dict:
        self.stop_event.set()
        try:
            return self.results.get(timeout=60)
        finally:
            self.process.join(30)
            if self.process.is_alive():
                self.process.kill()


def lerobot_episodes(seconds: float) -> dict:
    server = _LeRobotLearner()
    ctx, address = server.ctx, server.address
    client_results = ctx.Queue()
    client = ctx.Process(target=_lerobot_sender, args=(address, seconds, client_results))
    client.start()
    try:
        sent = client_results.get(timeout=seconds + 120)
        client.join()
    finally:
        received = server.stop()
    elapsed = max(received["last"] - received["first"], 1e-9) if received["first"] else float("nan")
    return {"steps_per_s": received["steps"] / elapsed, "mb_per_s": received["bytes"] / elapsed / 1e6,
            "steps": received["steps"], "steps_sent": sent["episodes"] * STEPS}


def _params_client(address: str, results, expect: int):
    import queue

    import grpc
    from lerobot.transport import services_pb2, services_pb2_grpc
    from lerobot.transport.utils import bytes_to_state_dict, grpc_channel_options, receive_bytes_in_chunks

    stub = services_pb2_grpc.LearnerServiceStub(grpc.insecure_channel(address, grpc_channel_options()))
    stub.Ready(services_pb2.Empty(), timeout=10)
    arrived, done = queue.Queue(), threading.Event()
    stream = stub.StreamParameters(services_pb2.Empty())

    def receive():
        try:
            receive_bytes_in_chunks(stream, arrived, done)
        except grpc.RpcError:  # the cancel below, once both versions arrived
            pass

    threading.Thread(target=receive, daemon=True).start()
    for _ in range(expect):
        state = bytes_to_state_dict(arrived.get(timeout=120))
        results.put((time.time(), sum(t.numel() * t.element_size() for t in state["policy"].values())))
    done.set()
    stream.cancel()


def lerobot_weights(model_mb: float) -> dict:
    server = _LeRobotLearner()
    ctx, address, params = server.ctx, server.address, server.params
    arrivals = ctx.Queue()
    client = ctx.Process(target=_params_client, args=(address, arrivals, 2))
    client.start()
    try:
        return _time_weights(params, arrivals, client, model_mb)
    finally:
        server.stop()


def _time_weights(params, arrivals, client, model_mb: float) -> dict:
    import torch
    from lerobot.transport.utils import state_to_bytes

    small = state_to_bytes({"policy": {"w": torch.zeros(16)}})
    params.put(small)  # version 0: the stream is up and idle
    arrivals.get(timeout=60)
    time.sleep(1.0)
    n = int(model_mb * 1e6 / 4 / 8)
    policy = {f"layer{i}": torch.rand(n) for i in range(8)}
    sent_at = time.time()
    params.put(state_to_bytes({"policy": policy}))  # serialised before the clock would be fairer to LeRobot
    arrived_at, size = arrivals.get(timeout=300)
    client.join(30)
    return {"weights_s": arrived_at - sent_at, "model_mb": size / 1e6}


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="fleet bench transport-vs-lerobot")
    parser.add_argument("--seconds", type=float, default=20.0, help="episode streaming time per side")
    parser.add_argument("--model-mb", type=float, default=50.0, help="policy size for the weights figure")
    args = parser.parse_args(argv)
    try:
        import lerobot  # noqa: F401
    except ImportError:
        raise SystemExit("fleet bench transport-vs-lerobot runs in the LeRobot environment: make setup-lerobot, "
                         "then ~/.cache/fleetlearn/venv-lerobot/bin/fleet bench transport-vs-lerobot") from None
    from bench import ingest, weights

    print(f"ours: one robot streaming for {args.seconds:g} s into the real learner...", flush=True)
    ours = ingest.run_arm("learner", robots=1, seconds=args.seconds, inflight=4, steps=10)
    print(f"lerobot: one actor streaming episodes for {args.seconds:g} s into LearnerService...", flush=True)
    theirs = lerobot_episodes(args.seconds)
    print(f"weights: a {args.model_mb:g} MB policy to one robot, ours then LeRobot's...", flush=True)
    ours_w = weights.run_arm(robots=1, model_mb=args.model_mb)
    theirs_w = lerobot_weights(args.model_mb)
    figures = {
        "ours_steps_per_s": round(ours["steps_per_s"], 1), "lerobot_steps_per_s": round(theirs["steps_per_s"], 1),
        "ours_mb_per_s": round(ours["mb_per_s"], 1), "lerobot_mb_per_s": round(theirs["mb_per_s"], 1),
        "steps_per_s_ratio": round(ours["steps_per_s"] / theirs["steps_per_s"], 2),
        "ours_ack_p99_ms": round(ours["ack_p99_ms"], 1),
        "ours_weights_s": round(ours_w["propagation_s"], 3), "lerobot_weights_s": round(theirs_w["weights_s"], 3),
        "weights_ratio": round(theirs_w["weights_s"] / ours_w["propagation_s"], 2),
        "model_mb": round(ours_w["model_mb"], 1), "lerobot_model_mb": round(theirs_w["model_mb"], 1),
        "lerobot_push_wait_s_as_shipped": 4.0, "seconds": args.seconds,
        "lerobot_steps_sent": theirs["steps_sent"], "lerobot_steps_received": theirs["steps"],
    }
    print(f"steps/s: ours {figures['ours_steps_per_s']} vs LeRobot {figures['lerobot_steps_per_s']} "
          f"(x{figures['steps_per_s_ratio']}); weights: ours {figures['ours_weights_s']} s vs LeRobot "
          f"{figures['lerobot_weights_s']} s + up to 4 s push wait (x{figures['weights_ratio']})", flush=True)
    return figures

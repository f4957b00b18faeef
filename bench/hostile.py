"""A hostile client for `fleet bench soak --hostile`: one process that, for `--seconds`, at once
- floods: streams valid chunks as fast as gRPC takes them and never reads an acknowledgement;
- poisons: sends chunks whose actions are NaN;
- inflates: sends chunks declaring a tensor of shape [2^32, 2^32].
It writes what the learner answered to `--out` (JSON): chunks flooded, and the status codes of
the refusals, which must all be INVALID_ARGUMENT for the poisoned and inflated chunks.
"""

from __future__ import annotations

import argparse
import collections
import json
import threading
import time
import uuid
from pathlib import Path

import grpc
import numpy as np

from core import wire
from fleet.v1 import fleet_pb2 as pb
from fleet.v1 import fleet_pb2_grpc as pb_grpc

CAMERAS = {"front": (96, 96, 3), "wrist": (96, 96, 3)}
STEPS = 10


def make_chunk(robot_id: str, episode_id: str, sequence: int, action: np.ndarray | None = None) -> pb.EpisodeChunk:
    rng = np.random.default_rng(sequence)
    images = {name: rng.integers(0, 255, shape, dtype=np.uint8) for name, shape in CAMERAS.items()}
    steps = [wire.step_to_proto(sequence * STEPS + i, time.time(), images, np.zeros(7, np.float32),
                                np.zeros(4, np.float32) if action is None else action, None, "autonomous", 0.0, False)
             for i in range(STEPS)]
    return pb.EpisodeChunk(robot_id=robot_id, episode_id=episode_id, sequence=sequence, policy_version=0,
                           task="push_cube", kind=pb.EPISODE_KIND_TRAINING, steps=steps)


def flood(stub, metadata, robot_id: str, until: float, counts: collections.Counter) -> None:
    """Streams of valid chunks, sent as fast as gRPC takes them, whose acks are never read."""
    while time.time() < until:
        episode = uuid.uuid4().hex

        def chunks():
            for sequence in range(wire.MAX_SEQUENCE):
                if time.time() >= until:
                    return
                counts["flooded"] += 1
                yield make_chunk(robot_id, episode, sequence)

        call = stub.StreamEpisodes(chunks(), metadata=metadata, timeout=max(1.0, until - time.time()))
        try:
            call.code()  # blocks until the stream ends; the acknowledgements are never read
        except grpc.RpcError:
            pass


def refused(stub, metadata, robot_id: str, until: float, counts: collections.Counter, kind: str) -> None:
    while time.time() < until:
        bad = make_chunk(robot_id, uuid.uuid4().hex, 0)
        if kind == "nan":
            bad.steps[3].action.CopyFrom(wire.tensor_to_proto(np.array([0, np.nan, 0, 0], np.float32)))
        else:
            bad.steps[0].action.CopyFrom(pb.Tensor(dtype="float32", shape=[2 ** 32, 2 ** 32], data=b""))
        try:
            list(stub.StreamEpisodes(iter([bad]), metadata=metadata, timeout=10))
            counts[f"{kind}_accepted"] += 1
        except grpc.RpcError as exc:
            counts[f"{kind}_{exc.code().name}"] += 1
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile")
    parser.add_argument("--learner", required=True)
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    token = Path(args.token_file).read_text().split()[0]
    metadata = (("authorization", f"Bearer {token}"),)
    channel = grpc.insecure_channel(args.learner, options=[("grpc.max_send_message_length", 8 << 20)])
    stub = pb_grpc.FleetLearnerStub(channel)
    for robot_id in ("hostile-flood", "hostile-poison"):
        stub.Register(pb.RegisterRequest(robot_id=robot_id, embodiment=wire.embodiment_to_proto(
            robot_id, CAMERAS, 7, 4, 10)), metadata=metadata, timeout=30)
    counts: collections.Counter = collections.Counter()
    until = time.time() + args.seconds
    threads = [threading.Thread(target=flood, args=(stub, metadata, "hostile-flood", until, counts)),
               threading.Thread(target=refused, args=(stub, metadata, "hostile-poison", until, counts, "nan")),
               threading.Thread(target=refused, args=(stub, metadata, "hostile-poison", until, counts, "huge"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    channel.close()
    Path(args.out).write_text(json.dumps(dict(counts)))


if __name__ == "__main__":
    main()

"""Per-robot limits: a robot streaming flat out is slowed to its rate (backpressure, nothing
refused or lost) while another robot's chunks are acknowledged as usual."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np

from conftest import TOKEN
from fleet.v1 import fleet_pb2 as pb
from fleet.v1 import fleet_pb2_grpc as pb_grpc
from core import wire
from learner.limits import RobotLimits, TokenBucket

CAMERAS = {"front": (96, 96, 3), "wrist": (96, 96, 3)}
METADATA = (("authorization", f"Bearer {TOKEN}"),)


def chunks(robot_id: str, count: int, steps: int = 10):
    frames = {name: np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8) for name, shape in CAMERAS.items()}
    for sequence in range(count):
        yield pb.EpisodeChunk(robot_id=robot_id, episode_id=f"{robot_id}-e", sequence=sequence, task="t",
                              kind=pb.EPISODE_KIND_TRAINING, steps=[
                                  wire.step_to_proto(sequence * steps + i, 0.0, frames, np.zeros(7, np.float32),
                                                     np.zeros(4, np.float32), None, "autonomous", 0.0, False)
                                  for i in range(steps)])


def test_token_bucket_waits_for_its_rate():
    bucket = TokenBucket(rate=100.0, burst=10.0)
    assert bucket.try_take(10) and not bucket.try_take(5)


def test_a_flooding_robot_is_slowed_and_the_others_are_not(learner_thread):
    learner = learner_thread(train=False, limits=RobotLimits(mb_per_s=2.0, burst_mb=1.0))
    channel = grpc.insecure_channel(learner.address)
    stub = pb_grpc.FleetLearnerStub(channel)
    embodiment = wire.embodiment_to_proto("bench", CAMERAS, 7, 4, 10)
    for robot_id in ("hog", "calm"):
        stub.Register(pb.RegisterRequest(robot_id=robot_id, embodiment=embodiment), metadata=METADATA, timeout=5)
    hog = list(chunks("hog", 16))
    size_mb = sum(c.ByteSize() for c in hog) / 1e6
    result = {}

    def flood():
        started = time.perf_counter()
        result["hog_acks"] = list(stub.StreamEpisodes(iter(hog), metadata=METADATA, timeout=60))
        result["hog_s"] = time.perf_counter() - started

    flooding = threading.Thread(target=flood)
    flooding.start()
    time.sleep(0.5)
    latencies = []
    for chunk in chunks("calm", 5, steps=1):  # a 10 Hz robot's one-step chunks meanwhile
        started = time.perf_counter()
        acks = list(stub.StreamEpisodes(iter([chunk]), metadata=METADATA, timeout=10))
        latencies.append(time.perf_counter() - started)
        assert [a.status for a in acks] == [pb.ACK_STATUS_STORED]
        time.sleep(0.1)
    flooding.join(60)
    channel.close()
    # Every one of the hog's chunks stored, at about its rate: (size - burst) / rate at least.
    assert [a.status for a in result["hog_acks"]] == [pb.ACK_STATUS_STORED] * len(hog)
    assert result["hog_s"] >= 0.8 * (size_mb - 1.0) / 2.0, (result["hog_s"], size_mb)
    limits = learner.learner.servicer.limits
    assert limits.throttled_s("hog") > 1.0 and limits.throttled_s("calm") == 0.0
    assert max(latencies) < 1.0, latencies


def test_the_store_writer_serves_robots_in_turn_not_first_come_first_served():
    """A flood queued ahead of two other robots' chunks: the next group holds theirs, and no
    group outgrows its byte bound however much the flood has queued."""
    import collections

    from learner.store import writer

    def item(robot_id: str, sequence: int):
        return (pb.EpisodeChunk(robot_id=robot_id, sequence=sequence), {"images": np.zeros(1 << 20, np.uint8)},
                None, None)

    waiting = {"flood": collections.deque(item("flood", s) for s in range(40))}
    waiting["a"] = collections.deque([item("a", 0)])
    waiting["b"] = collections.deque([item("b", 0), item("b", 1)])
    groups = []
    while waiting:
        groups.append([(c.robot_id, c.sequence) for c, _, _, _ in writer.fair_group(waiting)])
    assert groups[0][:3] == [("flood", 0), ("a", 0), ("b", 0)]
    assert ("b", 1) in groups[0] + groups[1]
    assert all(len(g) * (1 << 20) <= writer._GROUP_COMMIT_BYTES for g in groups)
    flood = [s for g in groups for robot, s in g if robot == "flood"]
    assert flood == list(range(40))  # each robot's chunks keep their order

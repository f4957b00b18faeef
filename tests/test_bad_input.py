"""Bad input gets a clear gRPC status and a log line, and the learner keeps serving the others."""

from __future__ import annotations

import logging

import grpc
import numpy as np
import pytest

from conftest import TOKEN
from fleet.v1 import fleet_pb2 as pb
from fleet.v1 import fleet_pb2_grpc as pb_grpc
from core import wire

AUTH = (("authorization", f"Bearer {TOKEN}"),)
CAMERAS = {"front": (16, 16, 3)}


def chunk(robot_id="good-arm", episode="ep", sequence=0, state_dim=7, image_bytes=None):
    step = wire.step_to_proto(0, 0.0, {"front": np.zeros((16, 16, 3), np.uint8)}, np.zeros(state_dim, np.float32),
                              np.zeros(4, np.float32), None, "autonomous", 0.0, True)
    if image_bytes is not None:
        step.images[0].data = image_bytes
    return pb.EpisodeChunk(robot_id=robot_id, episode_id=episode, sequence=sequence, kind=pb.EPISODE_KIND_TRAINING,
                           steps=[step], episode_end=True, outcome=pb.EpisodeOutcome(num_steps=1))


def stream(stub, *chunks, metadata=AUTH):
    return list(stub.StreamEpisodes(iter(chunks), metadata=metadata, timeout=20))


@pytest.fixture
def stub(learner_thread):
    learner = learner_thread(train=False)
    channel = grpc.insecure_channel(learner.address, options=[("grpc.max_send_message_length", 64 << 20)])
    stub = pb_grpc.FleetLearnerStub(channel)
    stub.Register(pb.RegisterRequest(robot_id="good-arm", embodiment=wire.embodiment_to_proto("arm", CAMERAS, 7, 4, 10)),
                  metadata=AUTH, timeout=10)
    yield stub
    channel.close()


def expect(code, call, caplog, log_text):
    with caplog.at_level(logging.WARNING):
        with pytest.raises(grpc.RpcError) as info:
            call()
    assert info.value.code() == code, info.value.details()
    assert log_text in caplog.text, f"no log line containing {log_text!r}"
    caplog.clear()
    return info.value


def test_bad_inputs_are_refused_clearly_and_others_keep_streaming(stub, caplog):
    error = expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: stream(stub, chunk(image_bytes=b"\x00" * 10)),
                   caplog, "rejected")
    assert "camera front" in error.details()
    trailers = dict(error.trailing_metadata())
    assert trailers["fleet-rejected-episode"] == "ep" and trailers["fleet-rejected-sequence"] == "0"

    error = expect(grpc.StatusCode.INVALID_ARGUMENT, lambda: stream(stub, chunk(state_dim=5)), caplog, "rejected")
    assert "state shape" in error.details()

    error = expect(grpc.StatusCode.NOT_FOUND, lambda: stream(stub, chunk(robot_id="ghost")), caplog, "ghost")
    assert "Register" in error.details()

    huge = chunk(image_bytes=b"\x00" * (wire.MAX_MESSAGE_BYTES + 1024))
    expect(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: stream(stub, huge), caplog, "rejected")

    expect(grpc.StatusCode.UNAUTHENTICATED,
           lambda: stream(stub, chunk(), metadata=(("authorization", "Bearer wrong"),)), caplog, "bad token")
    expect(grpc.StatusCode.UNAUTHENTICATED, lambda: stub.Register(pb.RegisterRequest(robot_id="x"), timeout=5),
           caplog, "bad token")

    # None of that disturbed the server: a well-formed chunk is stored, and its re-send is a duplicate.
    acks = stream(stub, chunk(episode="fine"))
    assert [a.status for a in acks] == [pb.ACK_STATUS_STORED]
    assert [a.status for a in stream(stub, chunk(episode="fine"))] == [pb.ACK_STATUS_DUPLICATE]


def test_malformed_protobuf_bytes_are_refused(learner_thread, caplog):
    learner = learner_thread(train=False)
    channel = grpc.insecure_channel(learner.address)
    raw = channel.stream_stream("/fleet.v1.FleetLearner/StreamEpisodes", request_serializer=lambda b: b,
                                response_deserializer=lambda b: b)
    with caplog.at_level(logging.WARNING), pytest.raises(grpc.RpcError) as info:
        list(raw(iter([b"\xff\xff\xff\xff not a protobuf"]), metadata=AUTH, timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed EpisodeChunk" in info.value.details() and "malformed EpisodeChunk" in caplog.text
    # and the server still answers
    stub = pb_grpc.FleetLearnerStub(channel)
    reply = stub.Register(pb.RegisterRequest(robot_id="after", embodiment=wire.embodiment_to_proto("arm", CAMERAS, 7, 4, 10)),
                          metadata=AUTH, timeout=10)
    assert reply.max_message_bytes == wire.MAX_MESSAGE_BYTES
    channel.close()


@pytest.mark.parametrize("robot_id", ["", "all", "fleet", "x/../all", "arm 1", "a" * 65, "-lead"])
def test_robot_ids_outside_the_safe_alphabet_or_reserved_are_refused(learner_thread, robot_id):
    learner = learner_thread(train=False)
    channel = grpc.insecure_channel(learner.address)
    stub = pb_grpc.FleetLearnerStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Register(pb.RegisterRequest(robot_id=robot_id, embodiment=wire.embodiment_to_proto("arm", CAMERAS, 7, 4, 10)),
                      metadata=AUTH, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "robot_id" in info.value.details()
    channel.close()

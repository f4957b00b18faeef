"""Fuzzing: random bytes into every RPC, property-based chunks and robot messages (hypothesis),
and random bodies into every dashboard route. The server must answer each with a clear status,
never crash, and keep serving good input afterwards."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TOKEN, LearnerThread
from fleet.v1 import fleet_pb2 as pb
from fleet.v1 import fleet_pb2_grpc as pb_grpc
from core import wire

CAMERAS = {"front": (8, 8, 3)}
EMBODIMENT = wire.embodiment_to_proto("fuzz", CAMERAS, 3, 2, 10)
METADATA = (("authorization", f"Bearer {TOKEN}"),)
# What a bad input may get back: a refusal that names the problem, never INTERNAL or UNKNOWN.
CLEAR = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
         grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.PERMISSION_DENIED,
         grpc.StatusCode.DEADLINE_EXCEEDED}
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])


@pytest.fixture(scope="module")
def learner(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz")
    tokens = directory / "tokens.txt"
    tokens.write_text(TOKEN + "\n")
    operators = directory / "operators.txt"
    operators.write_text("fuzzer fuzz-operator-token-0123\n")
    learner = LearnerThread(directory / "learner", tokens, train=False, dashboard_port=0,
                            operator_token_file=operators).start()
    channel = grpc.insecure_channel(learner.address)
    stub = pb_grpc.FleetLearnerStub(channel)
    stub.Register(pb.RegisterRequest(robot_id="fuzz-arm", embodiment=EMBODIMENT), metadata=METADATA, timeout=5)
    learner.channel, learner.stub = channel, stub
    yield learner
    channel.close()
    learner.stop()


def still_serves(learner) -> None:
    """A well-formed chunk is stored after whatever came before."""
    global _good
    _good += 1
    frames = {"front": np.zeros((8, 8, 3), np.uint8)}
    chunk = pb.EpisodeChunk(robot_id="fuzz-arm", episode_id=f"good-{_good}", sequence=0, kind=pb.EPISODE_KIND_TRAINING,
                            task="t", steps=[wire.step_to_proto(0, 0.0, frames, np.zeros(3, np.float32),
                                                                np.zeros(2, np.float32), None, "autonomous", 0.0, False)])
    acks = list(learner.stub.StreamEpisodes(iter([chunk]), metadata=METADATA, timeout=10))
    assert [a.status for a in acks] == [pb.ACK_STATUS_STORED]


_good = 0


def raw_call(channel: grpc.Channel, method, payloads: list[bytes]) -> grpc.StatusCode:
    path = f"/{method.containing_service.full_name}/{method.name}"
    kind = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
            (True, False): channel.stream_unary, (True, True): channel.stream_stream}[
        (method.client_streaming, method.server_streaming)]
    rpc = kind(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        response = rpc(iter(payloads) if method.client_streaming else payloads[0], metadata=METADATA, timeout=2)
        if method.server_streaming:
            for _ in response:
                pass
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()


@FUZZ
@given(data=st.data())
def test_random_bytes_into_every_rpc(learner, data):
    for method in pb.DESCRIPTOR.services_by_name["FleetLearner"].methods:
        payloads = data.draw(st.lists(st.binary(max_size=512), min_size=1, max_size=3), label=method.name)
        code = raw_call(learner.channel, method, payloads)
        assert code in CLEAR, (method.name, payloads, code)
    still_serves(learner)


tensors = st.builds(pb.Tensor, dtype=st.sampled_from(["float32", "float64", "int64", "uint8", "bool", "complex64",
                                                      "object", "", "<f4", "S3"]),
                    shape=st.lists(st.integers(-3, 5), max_size=3), data=st.binary(max_size=64))
images = st.builds(pb.Image, camera=st.sampled_from(["front", "wrist", ""]), height=st.integers(-2, 9),
                   width=st.integers(-2, 9), channels=st.integers(-1, 4),
                   encoding=st.sampled_from(list(pb.ImageEncoding.values()) + [99]), data=st.binary(max_size=300))
steps = st.builds(pb.Step, index=st.integers(-5, 5), timestamp=st.floats(allow_nan=True),
                  images=st.lists(images, max_size=2), state=tensors, action=tensors,
                  source=st.sampled_from(list(pb.ActionSource.values()) + [42]), reward=st.floats(allow_nan=True))
chunks = st.builds(pb.EpisodeChunk, robot_id=st.sampled_from(["fuzz-arm", "", "ghost", "../../etc"]),
                   episode_id=st.text(max_size=20), sequence=st.integers(-3, 3),
                   kind=st.sampled_from(list(pb.EpisodeKind.values()) + [17]), task=st.text(max_size=10),
                   steps=st.lists(steps, max_size=3), episode_end=st.booleans())


@FUZZ
@given(batch=st.lists(chunks, min_size=1, max_size=3))
def test_property_based_chunks_get_clear_answers(learner, batch):
    try:
        acks = list(learner.stub.StreamEpisodes(iter(batch), metadata=METADATA, timeout=5))
        assert len(acks) <= len(batch)
    except grpc.RpcError as exc:
        assert exc.code() in CLEAR, exc
        assert exc.details(), "a refusal says why"
    still_serves(learner)


messages = st.one_of(
    st.builds(pb.RobotMessage, heartbeat=st.builds(pb.Heartbeat, robot_id=st.sampled_from(["fuzz-arm", "", "ghost"]),
                                                   step_index=st.integers(-9, 9))),
    st.builds(pb.RobotMessage, help=st.builds(pb.HelpRequest, score=st.floats(allow_nan=True),
                                              threshold=st.floats(allow_nan=True))),
    st.builds(pb.RobotMessage, command_applied=st.builds(pb.CommandApplied, command_id=st.text(max_size=8))),
    st.builds(pb.RobotMessage, preview=st.builds(pb.Preview, robot_id=st.text(max_size=8), image=images)),
    st.builds(pb.RobotMessage))


@FUZZ
@given(sequence=st.lists(messages, min_size=1, max_size=5))
def test_property_based_control_streams_get_clear_answers(learner, sequence):
    try:
        for _ in learner.stub.Control(iter(sequence), metadata=METADATA, timeout=2):
            pass
    except grpc.RpcError as exc:
        assert exc.code() in CLEAR, exc
    still_serves(learner)


@FUZZ
@given(data=st.data())
def test_random_input_into_every_dashboard_route(learner, data):
    from fastapi.routing import APIRoute

    base = f"http://127.0.0.1:{learner.dashboard.port}"
    headers = {"Authorization": "Bearer fuzz-operator-token-0123", "Content-Type": "application/json"}
    for route in learner.dashboard.dashboard.app.routes:
        if not isinstance(route, APIRoute) or route.path == "/api/events":  # a stream: covered by the browser tests
            continue
        path = route.path
        for name in ("robot_id", "version", "action", "name"):
            value = data.draw(st.text(alphabet=st.characters(codec="ascii", exclude_characters="/?#%"), min_size=1,
                                      max_size=12), label=name)
            path = path.replace("{" + name + "}", urllib.request.quote(value))
        body = data.draw(st.one_of(st.binary(max_size=64),
                                   st.dictionaries(st.sampled_from(["dx", "dy", "dz", "gripper", "duration_s", "answer",
                                                                    "token"]),
                                                   st.one_of(st.floats(), st.text(max_size=5), st.none()),
                                                   max_size=4).map(lambda d: json.dumps(d).encode())), label="body")
        for method in route.methods:
            request = urllib.request.Request(base + path, method=method, headers=headers,
                                             data=body if method == "POST" else None)
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    code = response.status
            except urllib.error.HTTPError as exc:
                code = exc.code
            assert code < 500, (method, path, body, code)
    still_serves(learner)

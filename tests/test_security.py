"""Identity: per-robot and operator credentials, stored hashed, revocable; every RPC and every
dashboard route refuses callers without the right credential."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request

import grpc
import pytest

from conftest import LearnerThread, wait_for
from fleet.v1 import fleet_pb2 as pb
from fleet.v1 import fleet_pb2_grpc as pb_grpc
from core import wire
from learner.credentials import CredentialStore

EMBODIMENT = wire.embodiment_to_proto("test", {"front": (8, 8, 3)}, 3, 2, 10)


def create(data, *flags) -> str:
    out = subprocess.run([sys.executable, "-m", "fleetlearn.cli", "token", "create", "--data", str(data), *flags],
                         capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1]


def call_every_rpc(channel: grpc.Channel, token: str | None) -> dict[str, grpc.StatusCode]:
    """Each FleetLearner method, called with an empty request, as its kind of RPC."""
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    service = pb.DESCRIPTOR.services_by_name["FleetLearner"]
    codes = {}
    for method in service.methods:
        path = f"/{service.full_name}/{method.name}"
        request = getattr(pb, method.input_type.name)()
        kind = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
                (True, False): channel.stream_unary, (True, True): channel.stream_stream}[
            (method.client_streaming, method.server_streaming)]
        rpc = kind(path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=lambda b: b)
        try:
            response = rpc(iter([request]) if method.client_streaming else request, metadata=metadata, timeout=5)
            if method.server_streaming:
                list(response)
            codes[method.name] = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            codes[method.name] = exc.code()
    return codes


def test_credentials_are_stored_hashed_bound_to_their_robot_and_revocable(tmp_path):
    data = tmp_path / "learner"
    arm1 = create(data, "--robot", "arm-1")
    alice = create(data, "--operator", "alice")
    raw = (data / "credentials.sqlite").read_bytes()
    assert arm1.encode() not in raw and alice.encode() not in raw  # only hashes are kept

    learner = LearnerThread(data, None, train=False, dashboard_port=0).start()
    channel = grpc.insecure_channel(learner.address)
    stub = pb_grpc.FleetLearnerStub(channel)
    try:
        as_arm1 = (("authorization", f"Bearer {arm1}"),)
        # No token, a wrong one, or an operator's: refused on every RPC.
        for token in (None, "fl" + "r_" + "x" * 43, alice):
            codes = call_every_rpc(channel, token)
            assert set(codes.values()) == {grpc.StatusCode.UNAUTHENTICATED}, (token, codes)
        # arm-1's credential acts as arm-1 and no other robot.
        stub.Register(pb.RegisterRequest(robot_id="arm-1", embodiment=EMBODIMENT), metadata=as_arm1, timeout=5)
        for attempt in (
                lambda: stub.Register(pb.RegisterRequest(robot_id="arm-2", embodiment=EMBODIMENT), metadata=as_arm1,
                                      timeout=5),
                lambda: list(stub.StreamEpisodes(iter([pb.EpisodeChunk(robot_id="arm-2", episode_id="e", sequence=0)]),
                                                 metadata=as_arm1, timeout=5)),
                lambda: list(stub.Control(iter([pb.RobotMessage(heartbeat=pb.Heartbeat(robot_id="arm-2"))]),
                                          metadata=as_arm1, timeout=5))):
            with pytest.raises(grpc.RpcError) as refused:
                attempt()
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value.details()

        # The dashboard: the operator credential logs in as alice, the robot's does not.
        base = f"http://127.0.0.1:{learner.dashboard.port}"

        def status(path: str, token: str | None, method: str = "GET") -> int:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            try:
                with urllib.request.urlopen(urllib.request.Request(base + path, method=method, headers=headers),
                                            timeout=5) as r:
                    return r.status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert status("/api/learning", alice) == 200
        assert status("/api/learning", arm1) == 401

        # Revoked: refused by the running server within its refresh interval.
        credential = next(c for c in CredentialStore(data).list() if c["subject"] == "arm-1")
        subprocess.run([sys.executable, "-m", "fleetlearn.cli", "token", "revoke", "--data", str(data), "--id",
                        credential["id"]], check=True, capture_output=True)

        def refused() -> bool:
            try:
                stub.Register(pb.RegisterRequest(robot_id="arm-1", embodiment=EMBODIMENT), metadata=as_arm1, timeout=5)
                return False
            except grpc.RpcError as exc:
                return exc.code() == grpc.StatusCode.UNAUTHENTICATED

        wait_for(refused, 10, "the revoked credential to be refused")
    finally:
        channel.close()
        learner.stop()


def test_every_dashboard_route_refuses_missing_and_wrong_tokens(tmp_path):
    from fastapi.routing import APIRoute

    data = tmp_path / "learner"
    arm1 = create(data, "--robot", "arm-1")
    learner = LearnerThread(data, None, train=False, dashboard_port=0).start()
    try:
        app = learner.dashboard.dashboard.app
        base = f"http://127.0.0.1:{learner.dashboard.port}"
        checked = 0
        for route in app.routes:
            if not isinstance(route, APIRoute) or route.path in ("/", "/login", "/api/login") \
                    or route.path.startswith("/static"):
                continue
            path = route.path.replace("{robot_id}", "arm-1").replace("{version}", "0").replace(
                "{action}", "pause").replace("{name}", "app.js")
            for method in route.methods:
                for token in (None, "wrong-token-0123456789", arm1):
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    request = urllib.request.Request(base + path, method=method, headers=headers,
                                                     data=b"{}" if method == "POST" else None)
                    with pytest.raises(urllib.error.HTTPError) as refused:
                        urllib.request.urlopen(request, timeout=5)
                    assert refused.value.code == 401, (method, path, token, refused.value.code)
                    checked += 1
        assert checked >= 3 * 8
    finally:
        learner.stop()

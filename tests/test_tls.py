"""TLS and mutual TLS, end to end: `fleet certs`' development CA, a real learner, a MuJoCo robot."""

from __future__ import annotations

import ssl
import subprocess
import sys
import urllib.request

import grpc
import pytest

from conftest import TOKEN, LearnerThread, wait_for
from fleet.v1 import fleet_pb2 as pb
from fleet.v1 import fleet_pb2_grpc as pb_grpc
from core.tls import ClientTLS, ServerTLS
from learner.store import StoreReader
from test_fleet_e2e import RobotThread, publish_small_policy


@pytest.fixture
def certs(tmp_path):
    out = tmp_path / "certs"
    subprocess.run([sys.executable, "-m", "fleetlearn.cli", "certs", "--out", str(out), "--clients", "arm-1"],
                   check=True, capture_output=True)
    return out


def robot_episode_stored(tmp_path, learner, tls: ClientTLS) -> None:
    publish_small_policy(learner.config.data_dir, 0)
    robot = RobotThread(tmp_path / "robots", learner.address, "arm-1", max_steps=20, help_gate="off", tls=tls).start()
    try:
        reader = StoreReader(learner.config.data_dir)
        wait_for(lambda: reader.complete_episodes(), 60, "an episode streamed over TLS")
        reader.close()
    finally:
        robot.stop()


def test_tls_end_to_end_and_plaintext_refused(tmp_path, token_file, certs):
    tls = ServerTLS(certs / "server.pem", certs / "server.key")
    learner = LearnerThread(tmp_path / "learner", token_file, train=False, tls=tls, insecure=False,
                            dashboard_port=0).start()
    try:
        robot_episode_stored(tmp_path, learner, ClientTLS(certs / "ca.pem"))
        # A plaintext client gets nowhere.
        with grpc.insecure_channel(learner.address) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                pb_grpc.FleetLearnerStub(channel).Register(pb.RegisterRequest(robot_id="x"), timeout=3,
                                                           metadata=(("authorization", f"Bearer {TOKEN}"),))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        # The dashboard is HTTPS with the same certificate.
        operator = (learner.config.data_dir / "operator_token").read_text().strip()
        request = urllib.request.Request(f"https://127.0.0.1:{learner.dashboard.port}/api/learning",
                                         headers={"Authorization": f"Bearer {operator}"})
        context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            assert response.status == 200
        assert learner.dashboard.url.startswith("https://")
    finally:
        learner.stop()


def test_mutual_tls_needs_a_client_certificate(tmp_path, token_file, certs):
    tls = ServerTLS(certs / "server.pem", certs / "server.key", client_ca=certs / "ca.pem")
    learner = LearnerThread(tmp_path / "learner", token_file, train=False, tls=tls, insecure=False).start()
    try:
        robot_episode_stored(tmp_path, learner,
                             ClientTLS(certs / "ca.pem", certs / "client-arm-1.pem", certs / "client-arm-1.key"))
        # Trusting the server is not enough: without a client certificate the handshake fails.
        credentials = ClientTLS(certs / "ca.pem").grpc_credentials()
        with grpc.secure_channel(learner.address, credentials) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                pb_grpc.FleetLearnerStub(channel).Register(pb.RegisterRequest(robot_id="x"), timeout=3,
                                                           metadata=(("authorization", f"Bearer {TOKEN}"),))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        learner.stop()


def test_plaintext_needs_the_explicit_flag(tmp_path, token_file):
    from learner.server import Learner, LearnerConfig

    with pytest.raises(ValueError, match="--insecure"):
        Learner(LearnerConfig(data_dir=tmp_path, token_file=token_file))
    result = subprocess.run([sys.executable, "-m", "fleetlearn.cli", "robot", "--sim", "reach", "--learner",
                             "127.0.0.1:1", "--token-file", str(token_file), "--work-dir", str(tmp_path / "r")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "--insecure" in result.stderr and "Traceback" not in result.stderr

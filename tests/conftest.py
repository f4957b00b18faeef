"""Shared fixtures: real learners (in-process or as a `fleet learner` subprocess) on loopback."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

TOKEN = "test-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def token_file(tmp_path) -> Path:
    path = tmp_path / "tokens.txt"
    path.write_text(f"# robot tokens\n{TOKEN}\n")
    return path


class LearnerThread:
    """A real Learner (gRPC server on loopback) running on its own event loop thread."""

    def __init__(self, data_dir: Path, token_file: Path, **config):
        from learner.server import LearnerConfig

        # The operator dashboard is an extension the learner is handed, as `fleet learner` does.
        dashboard = {key: config.pop(key) for key in ("dashboard_port", "dashboard_host", "operator_token_file")
                     if key in config}
        self.extensions = ()
        if dashboard.get("dashboard_port") is not None:
            from dashboard.extension import DashboardConfig, OperatorDashboard

            self.extensions = (OperatorDashboard(DashboardConfig(port=dashboard["dashboard_port"],
                                                                 host=dashboard.get("dashboard_host"),
                                                                 operator_token_file=dashboard.get("operator_token_file"))),)
        self.config = LearnerConfig(data_dir=data_dir, host="127.0.0.1", port=0, token_file=token_file,
                                    **{"insecure": True, **config})
        self.learner = None
        self.port = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self):
        from learner.server import Learner

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.learner = Learner(self.config, self.extensions)
        self.port = await self.learner.start()
        self._ready.set()
        await self._stop.wait()
        await self.learner.stop()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self):
        """The running operator dashboard (dashboard.extension.OperatorDashboard), if one was asked for."""
        return self.extensions[0] if self.extensions else None

    def start(self) -> "LearnerThread":
        self._thread.start()
        assert self._ready.wait(30), "learner did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)


@pytest.fixture
def learner_thread(tmp_path, token_file):
    started = []

    def start(**config) -> LearnerThread:
        learner = LearnerThread(tmp_path / "learner", token_file, **config).start()
        started.append(learner)
        return learner

    yield start
    for learner in started:
        learner.stop()


class LearnerProcess:
    """`fleet learner` as a subprocess, so tests can kill -9 it and start it again."""

    def __init__(self, data_dir: Path, token_file: Path, port: int, log_path: Path, extra: list[str]):
        self.args = [sys.executable, "-m", "fleetlearn.cli", "learner", "--data", str(data_dir), "--host", "127.0.0.1",
                     "--port", str(port), "--token-file", str(token_file), "--dashboard-port", "0", "--insecure", *extra]
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "LearnerProcess":
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: b"listening" in self.log_path.read_bytes() or self.proc.poll() is not None, 60,
                 "learner to listen")
        assert self.proc.poll() is None, self.log_path.read_text()
        # The next start must find its own "listening" line: mark the log.
        with open(self.log_path, "a") as f:
            f.write("--- started ---\n")
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        text = self.log_path.read_text().replace("listening", "listened")
        self.log_path.write_text(text)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def learner_process(tmp_path, token_file):
    made = []

    def make(extra: list[str] | None = None, port: int | None = None) -> LearnerProcess:
        learner = LearnerProcess(tmp_path / "learner", token_file, port or free_port(), tmp_path / "learner.log",
                                 extra or [])
        made.append(learner)
        return learner

    yield make
    for learner in made:
        learner.stop()


@pytest.fixture
def redis_url(tmp_path):
    """A real redis-server on a free loopback port, persisting as deploy/ runs it (AOF, fsync always)."""
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (.ci/run installs it; on Debian: apt-get install redis-server)")
    import redis

    port = free_port()
    directory = tmp_path / "redis"
    directory.mkdir()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                             "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
                            stdout=open(directory / "redis.log", "w"), stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def up():
        try:
            return client.ping()
        except redis.ConnectionError:
            assert proc.poll() is None, (directory / "redis.log").read_text()
            return False

    wait_for(up, 10, "redis-server to answer")
    client.close()
    yield url
    proc.terminate()
    proc.wait(10)

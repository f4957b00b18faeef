"""Shared fixtures: real learners (in-process or as a `fleet learner` subprocess) on loopback."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from harness.learner import LearnerProcess  # noqa: E402
from harness.processes import free_port, wait_for  # noqa: E402
from harness.redis_server import INSTALL_HINT, RedisServer  # noqa: E402

torch.set_num_threads(1)

TOKEN = "test-token-0123456789"
# What test modules import from here (`from conftest import wait_for`), the harness's names included.
__all__ = ["TOKEN", "LearnerThread", "LearnerProcess", "free_port", "wait_for"]


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


@pytest.fixture
def learner_process(tmp_path, token_file):
    """`fleet learner` subprocesses on one data directory and one log (each start appends to it)."""
    made = []

    def make(extra: list[str] | None = None, port: int | None = None) -> LearnerProcess:
        learner = LearnerProcess(tmp_path / "learner", token_file, tmp_path / "learner.log", port=port or free_port(),
                                 extra=extra or [], dashboard_port=0)
        made.append(learner)
        return learner

    yield make
    for learner in made:
        learner.stop()


@pytest.fixture
def redis_url(tmp_path):
    """A real redis-server on a free loopback port (harness.redis_server.RedisServer)."""
    if RedisServer.binary() is None:
        pytest.skip(f"redis-server is not installed (.ci/run installs it; {INSTALL_HINT})")
    server = RedisServer(tmp_path / "redis").start()
    yield server.url
    server.stop()

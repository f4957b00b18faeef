"""A real redis-server for the scale-out plane (learner/redis_plane.py), on a free loopback port."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from harness.processes import free_port, stop_processes, wait_for

INSTALL_HINT = "on Debian: apt-get install redis-server"


class RedisServer:
    """redis-server persisting as deploy/ runs it (append-only file, fsync on every write), so what
    the tests and benchmarks measure includes Redis's durability cost. Its data and log are in
    `directory`."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def binary() -> str | None:
        """The redis-server on PATH, if any."""
        return shutil.which("redis-server")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        """Starts the server and returns once it answers PING."""
        import redis

        binary = self.binary()
        if binary is None:
            raise FileNotFoundError(f"redis-server is not installed ({INSTALL_HINT})")
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                 "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
                stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url)

        def answers() -> bool:
            try:
                return client.ping()
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited:\n{self.log_path.read_text()}") from None
                return False

        try:
            wait_for(answers, timeout, "redis-server to answer")
        finally:
            client.close()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            stop_processes([self.proc], timeout)

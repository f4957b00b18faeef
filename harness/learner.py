"""`fleet learner` and `fleet ingest` as subprocesses on loopback."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.processes import spawn_fleet, stop_processes, wait_for

LOG_TAIL_CHARS = 4000


class LearnerProcess:
    """`fleet learner` (or `fleet ingest`, `command="ingest"`) as a subprocess, so a caller can kill
    -9 it and start it again on the same port and data. With port 0 the server picks one and
    writes it to a port file beside the log; restarts then keep that port."""

    def __init__(self, data_dir: Path, token_file: Path, log_path: Path, *, port: int = 0,
                 extra: Sequence[str] = (), command: str = "learner", dashboard_port: int = -1,
                 env: Mapping[str, str] | None = None):
        self.command = command
        self.port = port
        self.log_path = Path(log_path)
        self.dashboard_port = dashboard_port
        self.env = env
        self.port_file = self.log_path.with_suffix(".port") if port == 0 else None
        self.args = [command, "--data", str(data_dir), "--host", "127.0.0.1", "--port", str(port),
                     "--token-file", str(token_file), "--dashboard-port", str(dashboard_port), "--insecure",
                     *(["--port-file", str(self.port_file)] if self.port_file else []), *extra]
        self.proc: subprocess.Popen | None = None
        self._log_offset = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def launch(self) -> "LearnerProcess":
        """Spawns the server without waiting for it: robots retry until it listens."""
        # Every life appends to one log; readiness is looked for only in what this life wrote.
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.proc = spawn_fleet(self.args, self.log_path, self.env, append=True)
        return self

    def start(self, timeout: float = 60.0) -> "LearnerProcess":
        """Spawns the server and returns once it listens."""
        self.launch()
        wait_for(lambda: self._listening() or self.proc.poll() is not None, timeout, f"`fleet {self.command}` to listen")
        if self.proc.poll() is not None:
            raise RuntimeError(f"`fleet {self.command}` exited with code {self.proc.returncode}:\n{self.log_tail()}")
        if self.port_file is not None:
            self.port = int(self.port_file.read_text())
            self.args[self.args.index("--port") + 1] = str(self.port)
        return self

    def _listening(self) -> bool:
        with open(self.log_path, "rb") as log:
            log.seek(self._log_offset)
            return b"listening" in log.read()

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:] if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as a crash or a power cut would leave things."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0, kill: bool = True) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds (kill=False: TimeoutExpired instead)."""
        if self.proc is not None:
            stop_processes([self.proc], timeout, kill=kill)

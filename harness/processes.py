"""Ports, waiting, and `fleet` subprocesses: spawned with a log, stopped in order."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def free_port(preferred: int = 0) -> int:
    """A loopback TCP port nothing listens on now: `preferred` when it is free, else any."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """The first truthy value `predicate` returns; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def single_thread_env() -> dict[str, str]:
    """This process's environment with one math thread per process: a fleet of N processes on a
    few cores would otherwise oversubscribe them N times over."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}


def fleet_command(args: Sequence[str]) -> list[str]:
    """`fleet ARGS` run by this interpreter, so a subprocess sees the same environment and checkout."""
    return [sys.executable, "-m", "fleetlearn.cli", *args]


def spawn_fleet(args: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None,
                append: bool = False) -> subprocess.Popen:
    """`fleet ARGS` as a subprocess, stdout and stderr into `log_path`."""
    with open(log_path, "a" if append else "w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(fleet_command(args), stdout=log, stderr=subprocess.STDOUT,
                                env=dict(env) if env is not None else None)


def spawn_robot(learner: str, robot_id: str, tasks: str, token_file: Path, work_dir: Path, log_path: Path,
                extra: Sequence[str] = (), env: Mapping[str, str] | None = None,
                driver: Sequence[str] = ()) -> subprocess.Popen:
    """`fleet robot --sim TASKS` against `learner` (host:port, or a comma-separated failover list),
    over plaintext loopback, with `extra` flags; `driver`: other driver flags instead of `--sim
    TASKS` (e.g. `--env MODULE:FACTORY --expert MODULE:FACTORY --task NAME`)."""
    source = list(driver) or ["--sim", tasks]
    return spawn_fleet(["robot", *source, "--learner", learner, "--robot-id", robot_id,
                        "--token-file", str(token_file), "--work-dir", str(work_dir), *extra, "--insecure"],
                       log_path, env)


def stop_processes(processes: Sequence[subprocess.Popen], timeout: float = 20.0, *,
                   signals: Mapping[subprocess.Popen, int] | None = None, kill: bool = True) -> None:
    """Signals every live process in the order given (SIGTERM unless `signals` names another for
    it), then waits for each. One still running `timeout` seconds into its wait is killed, or with
    kill=False the wait's TimeoutExpired is raised, for callers whose figures need a clean exit."""
    signals = signals or {}
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signals.get(proc, signal.SIGTERM))
    for proc in processes:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            if not kill:
                raise
            proc.kill()
            proc.wait()


def stop_fleet(learner: subprocess.Popen | None, robots: Sequence[subprocess.Popen], timeout: float = 20.0) -> None:
    """A learner and its robots, the robots signalled first (SIGTERM: each ends its episode as
    stopped, drains its spool for a moment and writes its figures), then the learner (SIGINT)."""
    group = [*robots, learner] if learner is not None else list(robots)
    stop_processes(group, timeout, signals={learner: signal.SIGINT} if learner is not None else None)

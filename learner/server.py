"""The learner process: the gRPC server (learner/servicer.py behind learner/interceptors.py), the
weight publisher, the control plane, its extensions, and a supervised trainer in a spawned process."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from core import wire
from core.tls import ServerTLS, warn_insecure
from fleet.v1 import fleet_pb2_grpc as pb_grpc
from learner.canary import CanarySettings
from learner.control import FleetControl
from learner.credentials import Authenticator
from learner.episode_stream import TRANSPORT_MAX_MESSAGE_BYTES
from learner.events import EventFanout, LearnerExtension
from learner.interceptors import MalformedRequestInterceptor, TokenAuthInterceptor, read_tokens
from learner.limits import RobotLimits
from learner.publisher import WeightPublisher
from learner.servicer import FleetLearnerServicer
from learner.store import EpisodeStore, open_index
from learner.train_process import trainer_main
from learner.trainer import TrainerConfig
from learner.versions import open_registry
from monitor.calibration import PercentileBook

log = logging.getLogger("fleetlearn.learner")


@dataclass
class LearnerConfig:
    data_dir: Path
    host: str = "0.0.0.0"
    port: int = 50051
    token_file: Path | None = None
    operators: int = 0
    operator_priority: str = "fifo"      # help queue order: "fifo" or "float" (highest FLOAT index first)
    min_operator_s: float = 0.0          # an assigned operator stays with a robot at least this long
    train: bool = True
    trainer: dict = field(default_factory=dict)  # TrainerConfig overrides
    port_file: Path | None = None
    # Scale-out (learner/store/redis.py, learner/versions.py, learner/relay.py): the index, versions, robot registry and control relay in
    # this Redis, shared with other replicas on the same data_dir volume. None: all embedded.
    redis_url: str | None = None
    replica_id: str | None = None
    # TLS for gRPC and the extensions' servers (mTLS when tls.client_ca is set); plaintext only with insecure.
    tls: ServerTLS | None = None
    insecure: bool = False
    canary: CanarySettings = field(default_factory=CanarySettings)  # off unless canary.fraction > 0
    limits: RobotLimits = field(default_factory=RobotLimits)        # per robot: episode bytes/s, pictures/s


class Learner:
    """Server + publisher + control plane in this process, trainer in a spawned one. Extensions
    (the operator dashboard) start after the server and stop before it; they hear the learner's
    events through `self.events`."""

    def __init__(self, config: LearnerConfig, extensions: tuple[LearnerExtension, ...] = ()):
        if config.tls is None and not config.insecure:
            raise ValueError("the learner needs --tls-cert and --tls-key (fleet certs makes a development CA), "
                             "or --insecure to serve plaintext")
        self.config = config
        # Robots authenticate with their own credential (fleet token create --robot ID) or a
        # fleet-wide token from --token-file.
        self.auth = Authenticator(config.data_dir, read_tokens(config.token_file) if config.token_file else set())
        if config.token_file is None and not any(c["kind"] == "robot" and not c["revoked_at"]
                                                 for c in self.auth.store.list()):
            log.warning("no --token-file and no robot credentials yet: robots are refused until one is made "
                        "(fleet token create --robot ID --data %s)", config.data_dir)
        self.relay = None
        self.replica_id = ""
        if config.redis_url:
            from learner.redis_client import default_replica_id

            self.replica_id = config.replica_id or default_replica_id()
        self.store = EpisodeStore(config.data_dir, index=open_index(config.data_dir, config.redis_url, self.replica_id))
        self.registry = open_registry(config.data_dir, config.redis_url)
        self.publisher = WeightPublisher(self.registry, canary=config.canary, data_dir=config.data_dir)
        self.control = FleetControl([f"sim-operator-{i + 1}" for i in range(config.operators)],
                                    priority=config.operator_priority, min_assignment_s=config.min_operator_s,
                                    percentiles=PercentileBook(Path(config.data_dir) / "float_percentiles.json"))
        self.events = EventFanout()
        self.extensions = tuple(extensions)
        if config.redis_url:
            from learner.relay import ControlRelay

            self.relay = ControlRelay(config.redis_url, self.replica_id, self.control)
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None
        self.trainer_process = None
        self.trainer_stop = None
        self.trainer_restarts = 0
        self._supervisor_task = None

    async def start(self) -> int:
        self.server = grpc.aio.server(
            interceptors=[TokenAuthInterceptor(self.auth), MalformedRequestInterceptor()],
            options=[("grpc.max_receive_message_length", TRANSPORT_MAX_MESSAGE_BYTES),
                     ("grpc.max_send_message_length", wire.MAX_MESSAGE_BYTES),
                     ("grpc.keepalive_time_ms", 20_000), ("grpc.keepalive_timeout_ms", 10_000),
                     ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                     ("grpc.keepalive_permit_without_calls", 1)])
        self.servicer = FleetLearnerServicer(self.store, self.publisher, self.control, events=self.events,
                                             relay=self.relay, auth=self.auth, limits=self.config.limits)
        pb_grpc.add_FleetLearnerServicer_to_server(self.servicer, self.server)
        address = f"{self.config.host}:{self.config.port}"
        if self.config.tls is not None:
            self.port = self.server.add_secure_port(address, self.config.tls.grpc_credentials())
        else:
            warn_insecure(f"the learner on {address}")
            self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"cannot bind {self.config.host}:{self.config.port}; is another learner running?")
        if self.relay is not None:
            await self.relay.start()
        self.publisher.poll_once()
        self._publisher_task = asyncio.create_task(self.publisher.run())
        self._control_task = asyncio.create_task(self._tick_control())
        self._sweep_task = asyncio.create_task(self._close_stale_episodes())
        await self.server.start()
        if self.config.train:
            self.trainer_stop = multiprocessing.get_context("spawn").Event()
            self._start_trainer()
            self._supervisor_task = asyncio.create_task(self._supervise_trainer())
        for extension in self.extensions:
            await extension.start(self)
        if self.config.port_file:
            self.config.port_file.write_text(str(self.port))
        log.info("learner listening on %s:%d (data in %s%s)", self.config.host, self.port, self.config.data_dir,
                 f"; index in {self.config.redis_url} as replica {self.replica_id}" if self.relay else "")
        return self.port

    def _start_trainer(self) -> None:
        trainer_config = TrainerConfig(data_dir=self.config.data_dir, redis_url=self.config.redis_url,
                                       **self.config.trainer)
        self.trainer_process = multiprocessing.get_context("spawn").Process(
            target=trainer_main, args=(trainer_config, self.trainer_stop), name="fleet-trainer", daemon=True)
        self.trainer_process.start()

    async def _supervise_trainer(self) -> None:
        """A trainer that dies (killed, out of memory) is started again: it resumes from the latest
        version and reloads the store. Restarts back off to one a minute if it keeps dying."""
        delay, started = 2.0, time.monotonic()
        while not self.trainer_stop.is_set():
            await asyncio.sleep(1.0)
            if self.trainer_process.is_alive() or self.trainer_stop.is_set():
                if self.trainer_process.is_alive() and time.monotonic() - started > 600:
                    delay = 2.0  # ten healthy minutes: a later death starts again quickly
                continue
            code = self.trainer_process.exitcode
            if code == 0:  # it ended on purpose (another trainer holds the store): not restarted
                log.info("the trainer ended; it is not restarted")
                return
            log.error("the trainer exited (code %s); starting it again in %.0f s", code, delay)
            await asyncio.sleep(delay)
            if not self.trainer_stop.is_set():
                self._start_trainer()
                started = time.monotonic()
                self.trainer_restarts += 1
                delay = min(delay * 2, 60.0)

    async def _tick_control(self) -> None:
        while True:  # frees operators whose minimum time is over even when no robot is talking
            await asyncio.sleep(0.5)
            self.control.tick()

    async def _close_stale_episodes(self) -> None:
        """Episodes open longer than their bound (robots that never end them) are closed as
        truncated, up to a minute after the bound, so a chunk accepted just before it is indexed first."""
        bound = self.config.limits.episode_open_s
        while True:
            await asyncio.sleep(min(60.0, bound / 4))
            try:
                await asyncio.to_thread(self.store.close_stale, time.time() - bound - min(bound, 60.0))
            except Exception:  # the index is away (Redis) or locked: the next sweep tries again
                log.exception("closing stale episodes failed")

    async def stop(self) -> None:
        if self.trainer_stop is not None:
            self.trainer_stop.set()
        if self._supervisor_task is not None:
            self._supervisor_task.cancel()
        for extension in reversed(self.extensions):
            await extension.stop()
        if self.server is not None:
            await self.server.stop(grace=1.0)
        self._publisher_task.cancel()
        self._control_task.cancel()
        self._sweep_task.cancel()
        if self.relay is not None:
            await self.relay.stop()
        if self.trainer_process is not None:
            await asyncio.to_thread(self.trainer_process.join, 15)
            if self.trainer_process.is_alive():
                self.trainer_process.terminate()
        self.store.close()


def serve(config: LearnerConfig, extensions: tuple[LearnerExtension, ...] = ()) -> None:
    async def main():
        learner = Learner(config, extensions)
        await learner.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
        await learner.stop()

    asyncio.run(main())

"""Uplink: everything the robot says to the learner, on background threads.

The control loop hands sealed chunks to `spool_chunk`, which never blocks: a spool-writer thread
writes them to the on-disk spool (retrying a failed write, so no step is dropped). Three loops,
each reconnecting with exponential backoff on its own:
- episodes: streams spooled chunks, deletes each on ack, quarantines chunks the learner rejects;
- control: heartbeats and help requests up, operator commands down (into a queue the control
  loop drains between ticks);
- weights: watches policy announcements and stages downloaded, verified versions.
None of them is ever waited on by the control loop.

`address` may list several learners (ingest replicas sharing one store: `HOST:PORT,HOST:PORT`).
When the learner in use stops answering (UNAVAILABLE), the uplink moves to the next one and every
loop reconnects there. Chunks not yet acknowledged are still in the spool and are sent again; the
shared index stores each chunk once, so a failover neither loses nor duplicates a step.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import grpc

from fleet.v1 import fleet_pb2 as pb
from fleet.v1 import fleet_pb2_grpc as pb_grpc
from core import wire
from core.tls import ClientTLS
from robot_client.spool import CorruptChunk, Spool, SpoolWriter
from robot_client.weights import StandbySlot, download_version, load_downloaded

log = logging.getLogger("fleetlearn.uplink")

_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", wire.MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", wire.MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


def open_channel(tls, address: str) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
    return grpc.secure_channel(address, tls.grpc_credentials(), options=_CHANNEL_OPTIONS)


def _log_rpc_error(where: str, code, exc: grpc.RpcError) -> None:
    """A failed call, said once: a refused token is the person's to fix; a learner away is expected."""
    if code == grpc.StatusCode.UNAUTHENTICATED:
        log.error("%s: learner refused our token (%s); check --token-file", where, exc.details())
    elif code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        log.warning("%s: %s: %s", where, code, exc.details() if hasattr(exc, "details") else exc)


def refused_chunk(exc: grpc.RpcError) -> tuple[str, int, str] | None:
    """(episode, sequence, reason) of the chunk a learner refused for what it holds (the trailers
    name it; INVALID_ARGUMENT or RESOURCE_EXHAUSTED), or None for any other failure."""
    if not hasattr(exc, "trailing_metadata") or exc.code() not in (
            grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
        return None
    trailers = dict(exc.trailing_metadata() or ())
    episode, sequence = trailers.get("fleet-rejected-episode"), trailers.get("fleet-rejected-sequence")
    if episode is None or sequence is None:
        return None
    return episode, int(sequence), f"{exc.code().name}: {exc.details()}"


class Backoff:
    def __init__(self, initial: float = 0.2, maximum: float = 5.0):
        self.initial, self.maximum = initial, maximum
        self.delay = initial

    def reset(self) -> None:
        self.delay = self.initial

    def wait(self, stop: threading.Event) -> None:
        stop.wait(self.delay)
        self.delay = min(self.delay * 2, self.maximum)


class VersionRetries:
    """Failed downloads or loads of a version (a corrupt file, a hash or a non-finite weight that
    does not check out) retry that version after 1, 2, 4 ... 300 s, with +-50% jitter so a fleet
    does not come back at once; an announcement does not reset it. Meanwhile any other version
    announced is taken at once: a bad version never holds up the next one."""

    def __init__(self, initial: float = 1.0, maximum: float = 300.0, rng: random.Random | None = None):
        self.initial, self.maximum, self.rng = initial, maximum, rng or random.Random()
        self.failures: dict[int, int] = {}
        self.next_at: dict[int, float] = {}  # version -> when it may be tried again (time.monotonic)

    def failed(self, version: int, robot_id: str = "", reason: Exception | None = None) -> float:
        """Records one more failure of `version` (and says why); returns the seconds until its next try."""
        n = self.failures[version] = self.failures.get(version, 0) + 1
        delay = min(self.maximum, self.initial * 2 ** (n - 1)) * self.rng.uniform(0.5, 1.5)
        self.next_at[version] = time.monotonic() + delay
        if reason is not None:
            log.error("%s refused policy version %d (failure %d): %s; next try in %.1f s", robot_id, version, n,
                      reason, delay)
        return delay

    def due(self, version: int) -> bool:
        return time.monotonic() >= self.next_at.get(version, 0.0)

    def wait_s(self) -> float | None:
        """Seconds until the next refused version is due again (None: none waits)."""
        waits = [at - time.monotonic() for at in self.next_at.values()]
        waits = [w for w in waits if w > 0]
        return min(waits) if waits else None


@dataclass
class UplinkConfig:
    address: str  # HOST:PORT, or several separated by commas to fail over between
    token: str
    robot_id: str
    spool_dir: Path
    weights_dir: Path
    inflight_chunks: int = 32
    tls: ClientTLS | None = None  # None: plaintext (the CLI asks for --insecure)
    ack_log: Path | None = None   # append "time,latency_ms,steps" per acknowledged chunk (soak benchmarks)
    device: str = "cpu"            # where downloaded policies are loaded (the robot's --device)


class Uplink:
    def __init__(self, config: UplinkConfig, embodiment: pb.Embodiment, tasks: dict[str, str],
                 status: Callable[[], pb.Heartbeat], running_version: Callable[[], int] = lambda: -1):
        self.config = config
        self.embodiment = embodiment
        self.tasks = tasks
        self.status = status
        self.spool = Spool(config.spool_dir)
        self.standby = StandbySlot()
        self.commands: queue.Queue[pb.LearnerCommand] = queue.Queue()
        self.outbox: queue.Queue[pb.RobotMessage] = queue.Queue(maxsize=100)
        self.metadata = (("authorization", f"Bearer {config.token}"),)
        self.addresses = [a.strip() for a in config.address.split(",") if a.strip()]
        if not self.addresses:
            raise ValueError("the robot needs a learner address (HOST:PORT[,HOST:PORT...])")
        self._learner = 0      # index in addresses of the learner in use
        self._generation = 0   # bumped at every failover
        self._channel_lock = threading.Lock()
        self.channel = open_channel(self.config.tls, self.addresses[0])
        self.stub = pb_grpc.FleetLearnerStub(self.channel)
        self.failovers = 0
        self.weights_fetched = (0, 0)  # the last version's (bytes over the wire, bytes of its files)
        self.stop_event = threading.Event()
        self._registered = False
        self._register_lock = threading.Lock()
        self.connected = threading.Event()
        self.max_message_bytes = wire.MAX_MESSAGE_BYTES
        self.running_version = running_version  # the policy version the robot runs
        self.spool_writer = SpoolWriter(self.spool, config.robot_id)
        self._threads = [threading.Thread(target=fn, name=f"uplink-{fn.__name__}", daemon=True)
                         for fn in (self._episodes_loop, self._control_loop, self._weights_loop)]

    def start(self) -> None:
        self.spool_writer.start()
        for t in self._threads:
            t.start()

    def stop(self, drain_s: float = 0.0) -> None:
        """Writes the chunks handed over so far to the spool, waits up to `drain_s` for the spool
        to empty, and stops the threads."""
        self.spool_writer.stop()
        deadline = time.time() + drain_s
        while drain_s and len(self.spool) and time.time() < deadline:
            time.sleep(0.1)
        self.stop_event.set()
        self.spool.changed.set()
        self.channel.close()
        for t in self._threads:
            t.join(timeout=5)

    def send(self, message: pb.RobotMessage | Callable[[], pb.RobotMessage], droppable: bool = False) -> None:
        """Queues a control-plane message; dropped when the learner is unreachable (stale anyway).
        A `droppable` one (a live picture) is also dropped once the queue is half full, so it never
        crowds out a help request. `message` may be a function that builds it: it then runs on the
        control stream's thread when the message goes out, not on the caller's (the control loop)."""
        if droppable and self.outbox.qsize() >= self.outbox.maxsize // 2:
            return
        if self.connected.is_set():
            try:
                self.outbox.put_nowait(message)
            except queue.Full:
                pass

    # -- the spool ---------------------------------------------------------------------------------

    def spool_chunk(self, chunk: pb.EpisodeChunk) -> None:
        """Hands a sealed chunk to the spool writer (never blocks the control loop)."""
        self.spool_writer.put(chunk)

    @property
    def spooled_chunks(self) -> int:
        """Chunks not yet acknowledged: waiting for the writer, or on disk."""
        return self.spool_writer.waiting + len(self.spool)

    # -- learners --------------------------------------------------------------------------------

    @property
    def learner(self) -> str:
        return self.addresses[self._learner]

    def _link(self) -> tuple[int, pb_grpc.FleetLearnerStub]:
        """The learner in use, as (generation, stub), taken at the start of each attempt."""
        with self._channel_lock:
            return self._generation, self.stub

    def _fail_over(self, generation: int) -> None:
        """The learner of `generation` did not answer: move to the next (once, whichever loop saw it)."""
        with self._channel_lock:
            if len(self.addresses) == 1 or generation != self._generation or self.stop_event.is_set():
                return
            previous, old_channel = self.learner, self.channel
            self._learner = (self._learner + 1) % len(self.addresses)
            self._generation += 1
            self.failovers += 1
            self.channel = open_channel(self.config.tls, self.learner)
            self.stub = pb_grpc.FleetLearnerStub(self.channel)
            self._registered = False
        log.warning("%s: learner %s unreachable; failing over to %s", self.config.robot_id, previous, self.learner)
        old_channel.close()  # the other loops' streams on it end, and they reconnect to the new one

    # -- registration --------------------------------------------------------------------------

    def _ensure_registered(self, stub: pb_grpc.FleetLearnerStub) -> None:
        with self._register_lock:
            if self._registered:
                return
            request = pb.RegisterRequest(
                robot_id=self.config.robot_id, embodiment=self.embodiment, client_version="fleetlearn-0.1",
                tasks=[pb.TaskSpec(name=n, instruction=i) for n, i in self.tasks.items()])
            response = stub.Register(request, metadata=self.metadata, timeout=5.0)
            self.max_message_bytes = response.max_message_bytes or wire.MAX_MESSAGE_BYTES
            self._registered = True
            log.info("%s registered (learner publishes version %d)", self.config.robot_id, response.policy_version)

    def _on_rpc_error(self, where: str, exc: grpc.RpcError, generation: int) -> None:
        code = exc.code() if hasattr(exc, "code") else None
        if code == grpc.StatusCode.NOT_FOUND:
            self._registered = False
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            self._fail_over(generation)
        _log_rpc_error(where, code, exc)

    # -- episodes ------------------------------------------------------------------------------

    def _episodes_loop(self) -> None:
        backoff = Backoff()
        while not self.stop_event.is_set():
            if not len(self.spool):
                self.spool.changed.wait(0.5)
                self.spool.changed.clear()
                continue
            attempt_done = threading.Event()
            inflight: dict[tuple[str, int], tuple[float, int]] = {}  # -> (sent at, steps)
            generation, stub = self._link()
            try:
                self._ensure_registered(stub)
                responses = stub.StreamEpisodes(self._chunk_requests(inflight, attempt_done),
                                                     metadata=self.metadata)
                for ack in responses:
                    self.spool.ack(ack.episode_id, ack.sequence)
                    sent = inflight.pop((ack.episode_id, ack.sequence), None)
                    if sent is not None and self.config.ack_log is not None:
                        now = time.time()
                        with open(self.config.ack_log, "a") as log_file:
                            log_file.write(f"{now:.3f},{(now - sent[0]) * 1000:.2f},{sent[1]}\n")
                    backoff.reset()
            except grpc.RpcError as exc:
                self._on_rpc_error("episode stream", exc, generation)
                if refused := refused_chunk(exc):  # refused for what it holds: set aside, never sent again
                    log.error("learner rejected chunk %s/%s: %s; moved to %s", *refused, self.spool.dir / "rejected")
                    self.spool.reject(*refused)
            except Exception:
                log.exception("episode stream failed")
            finally:
                attempt_done.set()
            if not self.stop_event.is_set():
                backoff.wait(self.stop_event)

    def _chunk_requests(self, inflight: dict, attempt_done: threading.Event):
        sent: set[str] = set()
        while not (attempt_done.is_set() or self.stop_event.is_set()):
            for path in self.spool.pending():
                if len(inflight) >= self.config.inflight_chunks:
                    break
                if path.name in sent:
                    continue
                try:
                    chunk = self.spool.read(path)
                except FileNotFoundError:
                    continue
                except CorruptChunk as exc:
                    log.error("%s: spool file %s; moved to %s", self.config.robot_id, exc, self.spool.dir / "rejected")
                    continue
                sent.add(path.name)
                inflight[(chunk.episode_id, chunk.sequence)] = (time.time(), len(chunk.steps))
                yield chunk
            self.spool.changed.wait(0.05)
            self.spool.changed.clear()

    # -- control -------------------------------------------------------------------------------

    def _control_loop(self) -> None:
        backoff = Backoff()
        while not self.stop_event.is_set():
            attempt_done = threading.Event()
            generation, stub = self._link()
            try:
                self._ensure_registered(stub)
                self.connected.set()
                for command in stub.Control(self._control_requests(attempt_done), metadata=self.metadata):
                    self.commands.put(command)
                    backoff.reset()
            except grpc.RpcError as exc:
                self._on_rpc_error("control stream", exc, generation)
            except Exception:
                log.exception("control stream failed")
            finally:
                attempt_done.set()
                self.connected.clear()
            if not self.stop_event.is_set():
                backoff.wait(self.stop_event)

    def _control_requests(self, attempt_done: threading.Event):
        yield pb.RobotMessage(heartbeat=self.status())
        next_heartbeat = time.time() + 1.0
        while not (attempt_done.is_set() or self.stop_event.is_set()):
            try:
                message = self.outbox.get(timeout=max(0.0, next_heartbeat - time.time()))
                yield message() if callable(message) else message
            except queue.Empty:
                yield pb.RobotMessage(heartbeat=self.status())
                next_heartbeat = time.time() + 1.0

    # -- weights -------------------------------------------------------------------------------

    def _weights_loop(self) -> None:
        backoff, retries = Backoff(), VersionRetries()
        while not self.stop_event.is_set():
            generation, stub = self._link()
            version, deadline = None, retries.wait_s()
            try:
                self._ensure_registered(stub)
                request = pb.WatchPolicyRequest(robot_id=self.config.robot_id, current_version=self.running_version())
                # With a refused version waiting, the watch ends when it is due: it is announced again then.
                for announcement in stub.WatchPolicy(request, metadata=self.metadata, timeout=deadline):
                    backoff.reset()
                    if announcement.version in (self.running_version(), self.standby.peek_version()) \
                            or not retries.due(announcement.version):
                        continue
                    started, version = time.time(), announcement.version
                    download = download_version(stub, announcement, self.config.robot_id,
                                                self.config.weights_dir, self.metadata)
                    checkpoint = load_downloaded(download.directory, self.config.device)
                    self.standby.offer(checkpoint)
                    self.weights_fetched = (download.fetched_bytes, download.file_bytes)
                    log.info("%s staged policy version %d (%.2f s; fetched %d of its %d bytes)", self.config.robot_id,
                             checkpoint.version, time.time() - started, download.fetched_bytes, download.file_bytes)
                    version = None
            except grpc.RpcError as exc:
                if deadline is not None and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and version is None:
                    continue  # our own deadline: a refused version is due again
                self._on_rpc_error("policy watch", exc, generation)
            except Exception as exc:
                if version is None:
                    log.exception("policy watch failed")
                else:
                    retries.failed(version, self.config.robot_id, exc)
                    continue  # watch again at once: the refused version is skipped until it is due
            if not self.stop_event.is_set():
                backoff.wait(self.stop_event)


class Previews:
    """Live camera pictures for the dashboard: one camera, about `preview_hz` a second, encoded
    (PNG) on the uplink's thread rather than the control loop's, and the first to be dropped."""

    def __init__(self, uplink: Uplink, cameras: dict, control_hz: float, preview_hz: float):
        self.uplink = uplink
        self.every = max(1, round(control_hz / preview_hz)) if preview_hz > 0 else 0  # ticks; 0: none
        self.camera = "front" if "front" in cameras else next(iter(cameras))

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def send(self, images: dict, mode: int, episode_id: str, step: int) -> None:
        robot_id, camera, pixels, sent_at = self.uplink.config.robot_id, self.camera, images[self.camera], time.time()
        self.uplink.send(lambda: pb.RobotMessage(preview=pb.Preview(
            robot_id=robot_id, image=wire.png_image_to_proto(camera, pixels),
            mode=mode, episode_id=episode_id, step_index=step, sent_at=sent_at)), droppable=True)

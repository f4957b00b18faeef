"""The fleet.v1 service (grpc.aio). Its methods are thin: they validate, then call the
EpisodeStore, the WeightPublisher and FleetControl, and tell the learner's events."""

from __future__ import annotations

import asyncio
import logging
import uuid

import grpc
from google.protobuf.message import DecodeError

from core import wire
from core.ids import episode_id_problem, robot_id_problem
from fleet.v1 import fleet_pb2 as pb
from fleet.v1 import fleet_pb2_grpc as pb_grpc
from learner.control import FleetControl
from learner.credentials import Authenticator
from learner.episode_stream import EpisodeStream
from learner.events import LearnerEvents
from learner.interceptors import bearer
from learner.limits import FleetLimits, RobotLimits
from learner.publisher import WeightPublisher
from learner.store import EpisodeStore

log = logging.getLogger("fleetlearn.learner")

WEIGHTS_CHUNK_BYTES = 1 << 20
HEARTBEAT_INTERVAL_S = 1.0


def _embodiment_problem(e: pb.Embodiment) -> str | None:
    if e.state_dim <= 0 or e.action_dim <= 0:
        return f"state_dim and action_dim must be positive (got {e.state_dim}, {e.action_dim})"
    if any(c.height <= 0 or c.width <= 0 or c.channels <= 0 for c in e.cameras):
        return "every camera needs positive height, width and channels"
    if len({c.name for c in e.cameras}) != len(e.cameras):
        return "camera names must be unique"
    return None


class FleetLearnerServicer(pb_grpc.FleetLearnerServicer):
    def __init__(self, store: EpisodeStore, publisher: WeightPublisher, control: FleetControl,
                 max_message_bytes: int = wire.MAX_MESSAGE_BYTES, events: LearnerEvents | None = None, relay=None,
                 auth: Authenticator | None = None, limits: RobotLimits | None = None):
        self.limits = FleetLimits(limits or RobotLimits())
        self.auth = auth  # None: every caller the interceptor let in may act as any robot
        self.store = store
        self.publisher = publisher
        self.control = control
        self.events = events or LearnerEvents()
        self.relay = relay  # scale-out: the robot registry and the control relay in Redis
        self.max_message_bytes = max_message_bytes

    async def _acting_as(self, robot_id: str, context) -> None:
        """Aborts unless the caller's credential may act as `robot_id`: UNAUTHENTICATED for a
        credential that is unknown or revoked, PERMISSION_DENIED for another robot's."""
        if self.auth is None:
            return
        identity = self.auth.identify(bearer(context.invocation_metadata()))
        if identity is None:
            log.warning("refused an unknown or revoked credential acting as robot %r from %s", robot_id, context.peer())
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing, unknown or revoked bearer token")
        if not identity.may_act_as_robot(robot_id):
            who = f"{identity.kind} {identity.subject}"
            log.warning("refused %s acting as robot %r from %s", who, robot_id, context.peer())
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"this credential belongs to {who}, not robot {robot_id!r}")

    async def Register(self, request: pb.RegisterRequest, context) -> pb.RegisterResponse:
        await self._acting_as(request.robot_id, context)
        e = request.embodiment
        problem = robot_id_problem(request.robot_id) or _embodiment_problem(e)
        if problem:
            log.warning("rejected registration of %r: %s", request.robot_id, problem)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        tasks = [{"name": t.name, "instruction": t.instruction} for t in request.tasks]
        await asyncio.to_thread(self.store.register_robot, request.robot_id, e, tasks)
        log.info("registered %s (%s, %d cameras, tasks %s)", request.robot_id, e.robot_type, len(e.cameras),
                 [t["name"] for t in tasks])
        current = self.publisher.current
        return pb.RegisterResponse(session_id=uuid.uuid4().hex, policy_version=current.version if current else -1,
                                   max_message_bytes=self.max_message_bytes, heartbeat_interval_s=HEARTBEAT_INTERVAL_S)

    async def StreamEpisodes(self, request_iterator, context) -> None:
        """Reads chunks, stores them (pipelined through the group-commit writer) and acks in order
        (learner/episode_stream.py); a stream that must end with an error ends here."""
        stream = EpisodeStream(self, context)
        failure = await stream.run(request_iterator)
        if failure:
            code, message, chunk = failure
            log.warning("episode stream from %s rejected: %s: %s", stream.peer, code.name, message)
            # The trailers name a chunk refused for what it holds (the robot sets it aside); a
            # credential or a learner problem leaves it spooled. A header carries only a valid id.
            if (chunk is not None and code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
                    and episode_id_problem(chunk.episode_id) is None):
                context.set_trailing_metadata((("fleet-rejected-episode", chunk.episode_id),
                                               ("fleet-rejected-sequence", str(chunk.sequence))))
            await context.abort(code, message)

    async def acknowledge(self, context, chunk: pb.EpisodeChunk, status: str) -> None:
        """Tells the learner's parts of a chunk now durable, then the robot."""
        if status == "stored":
            self.events.ingested(len(chunk.steps))
            if chunk.episode_end and chunk.kind == pb.EPISODE_KIND_TRAINING:
                self.control.episode_feedback(chunk.task, chunk.outcome.float_summary, chunk.outcome.success)
            if chunk.episode_end and chunk.kind in (pb.EPISODE_KIND_TRAINING, pb.EPISODE_KIND_EVALUATION):
                evaluation = (chunk.task, chunk.seed) if chunk.kind == pb.EPISODE_KIND_EVALUATION else None
                self.publisher.episode_outcome(chunk.robot_id, chunk.policy_version, chunk.outcome.success, evaluation)
        await context.write(pb.ChunkAck(
            robot_id=chunk.robot_id, episode_id=chunk.episode_id, sequence=chunk.sequence,
            status=pb.ACK_STATUS_STORED if status == "stored" else pb.ACK_STATUS_DUPLICATE))

    async def check_chunk(self, chunk: pb.EpisodeChunk, size: int, embodiments: dict, context):
        """Why a chunk of `size` bytes (its ByteSize) is refused before it is decoded, or None."""
        if size > self.max_message_bytes:
            return (grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"chunk of {size} bytes exceeds max_message_bytes {self.max_message_bytes}; seal chunks smaller", chunk)
        if not chunk.robot_id or not chunk.episode_id:
            return grpc.StatusCode.INVALID_ARGUMENT, "chunk needs robot_id and episode_id", chunk
        if problem := robot_id_problem(chunk.robot_id) or episode_id_problem(chunk.episode_id):
            return grpc.StatusCode.INVALID_ARGUMENT, problem, chunk
        if self.auth is not None:  # every chunk: a credential revoked mid-stream stops the stream
            identity = self.auth.identify(bearer(context.invocation_metadata()))
            if identity is None:
                return grpc.StatusCode.UNAUTHENTICATED, "this robot's credential is unknown or was revoked", chunk
            if not identity.may_act_as_robot(chunk.robot_id):
                return (grpc.StatusCode.PERMISSION_DENIED,
                        f"this credential may not write episodes of robot {chunk.robot_id!r}", chunk)
        if not 0 <= chunk.sequence <= wire.MAX_SEQUENCE:
            return (grpc.StatusCode.INVALID_ARGUMENT,
                    f"sequence {chunk.sequence} is outside 0..{wire.MAX_SEQUENCE} (chunks of one episode)", chunk)
        if chunk.robot_id not in embodiments:
            embodiment = await asyncio.to_thread(self.store.robot_embodiment, chunk.robot_id)
            if embodiment is None:
                return grpc.StatusCode.NOT_FOUND, f"unknown robot {chunk.robot_id!r}: call Register first", chunk
            embodiments[chunk.robot_id] = embodiment
        return None

    async def WatchPolicy(self, request: pb.WatchPolicyRequest, context):
        await self._acting_as(request.robot_id, context)  # canary membership is by robot id
        queue = self.publisher.watch(request.robot_id)
        try:
            while True:
                yield await queue.get()
        finally:
            self.publisher.unwatch(queue)

    async def FetchWeights(self, request: pb.FetchWeightsRequest, context):
        path = self.publisher.file_path(request.version, request.file_name)
        if path is None:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"version {request.version} file {request.file_name!r} is not an announced version's")
        announced = {f.name: f for f in self.publisher.announced(request.version)[0].files}[request.file_name]
        end = request.offset + request.length if request.length else announced.size_bytes
        if not 0 <= request.offset <= end <= announced.size_bytes or request.length < 0:
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, f"range {request.offset}+{request.length} outside "
                                f"0..{announced.size_bytes}")
        with open(path, "rb") as f:
            f.seek(request.offset)
            offset = request.offset
            while offset < end:
                data = await asyncio.to_thread(f.read, min(WEIGHTS_CHUNK_BYTES, end - offset))
                if not data:
                    return
                yield pb.WeightsChunk(version=request.version, file_name=request.file_name, offset=offset, data=data,
                                      total_bytes=announced.size_bytes, sha256=announced.sha256)
                offset += len(data)

    async def Control(self, request_iterator, context) -> None:
        try:
            await self._control(context)
        except DecodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed RobotMessage: {exc}")

    async def _control(self, context) -> None:
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        if first.WhichOneof("body") != "heartbeat" or not first.heartbeat.robot_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the control stream must open with a heartbeat")
        robot_id = first.heartbeat.robot_id
        await self._acting_as(robot_id, context)
        if await asyncio.to_thread(self.store.robot_embodiment, robot_id) is None:
            log.warning("control stream from unknown robot %r", robot_id)
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown robot {robot_id!r}: call Register first")
        session = self.control.open(robot_id)

        async def forward_commands():
            while True:
                await context.write(await session.commands.get())

        sender = asyncio.create_task(forward_commands())
        try:
            await self._registry("robot_here", robot_id, True)
            self._on_message(robot_id, first)
            while True:
                message = await asyncio.wait_for(context.read(), timeout=10 * HEARTBEAT_INTERVAL_S)
                if message is grpc.aio.EOF:
                    break
                self._on_message(robot_id, message)
                await self._registry("robot_here", robot_id)
                if self.auth is not None and self.auth.identify(bearer(context.invocation_metadata())) is None:
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "this robot's credential was revoked")
        except asyncio.TimeoutError:
            log.warning("robot %s stopped sending heartbeats; closing its control stream", robot_id)
        finally:
            sender.cancel()
            try:
                if self.control.sessions.get(robot_id) is session:
                    await self._registry("robot_left", robot_id)
            finally:
                self.control.close(robot_id, session)

    async def _registry(self, method: str, *args) -> None:
        """The robot registry in Redis (scale-out): an outage there costs other replicas the
        route to this robot for a while, never the robot its control stream."""
        if self.relay is None:
            return
        try:
            await getattr(self.relay, method)(*args)
        except Exception as exc:
            log.warning("robot registry: %s(%s) failed: %s", method, args[0], exc)

    def _on_message(self, robot_id: str, message: pb.RobotMessage) -> None:
        if message.WhichOneof("body") == "preview" and not self.limits.preview_allowed(robot_id):
            return  # above its picture rate: the next picture replaces this one anyway
        self.events.robot_message(robot_id, message)
        if message.WhichOneof("body") != "preview":  # pictures are the dashboard's alone
            self.control.on_message(robot_id, message)

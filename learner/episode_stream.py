"""One StreamEpisodes call: chunks read, checked, handed to the store's group-commit writer and
acknowledged in order, under the stream's and the learner's caps on unacknowledged bytes.

Two tasks share the stream: this one reads and checks chunks, `_write_acks` waits for each
chunk to be durable and writes its ack. What a stream may hold is bounded in bytes and in time:
- at its own cap (RobotLimits.stream_pending_mb) the stream reads no further until acks go out;
- with no room under the learner-wide cap within PENDING_WAIT_S, it is refused (retryable);
- an ack the robot does not read for ACK_STALL_S ends the stream (retryable), so a client that
  never reads cannot hold its bytes, or the learner's, until its deadline.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from google.protobuf.message import DecodeError

from core import wire
from fleet.v1 import fleet_pb2 as pb
from learner.limits import PendingBytes
from learner.store.base import EpisodeContinuity

log = logging.getLogger("fleetlearn.learner")

# A stream that cannot get room under the learner's cap of unacknowledged bytes for this long is
# refused with RESOURCE_EXHAUSTED (the robot retries; its chunk stays spooled).
PENDING_WAIT_S = 5.0
# An ack the robot has not read for this long ends its stream with RESOURCE_EXHAUSTED, no
# trailers (nothing is set aside: what was stored is acked again as a duplicate on the re-send).
ACK_STALL_S = 30.0
# The transport accepts messages up to twice the announced limit so that the servicer, not the
# transport, refuses most oversized chunks: with RESOURCE_EXHAUSTED, the chunk named, and a log line.
TRANSPORT_MAX_MESSAGE_BYTES = 2 * wire.MAX_MESSAGE_BYTES

Failure = tuple[grpc.StatusCode, str, "pb.EpisodeChunk | None"]


class EpisodeStream:
    """`servicer` gives the checks (check_chunk), the acknowledgement (acknowledge), the store
    and the limits; `run` returns why the stream must end with an error, or None."""

    def __init__(self, servicer, context):
        self.servicer, self.context = servicer, context
        self.peer = context.peer()  # read while the call is live: grpc's peer() of a finished call crashes
        self.store, self.limits = servicer.store, servicer.limits
        self.pending: asyncio.Queue = asyncio.Queue()  # (chunk, its store future, its bytes), in order
        self.embodiments: dict[str, pb.Embodiment] = {}
        # steps run on across chunks; nothing after the end; nothing once the episode is open too long
        self.continuity = EpisodeContinuity(open_bound_s=self.limits.limits.episode_open_s)
        self.own = PendingBytes(self.limits.limits.stream_pending_mb * 1e6)  # this stream's unacknowledged bytes
        self.held = self.limits.pending  # the whole learner's
        self.reading, self.stalled = True, False
        self.released = False  # True once the stream has handed back all it held of the learner's budget

    async def run(self, request_iterator) -> Failure | None:
        reader = asyncio.current_task()
        writer = asyncio.create_task(self._write_acks(reader))
        writer.add_done_callback(lambda task: task.cancelled() or task.exception())  # retrieved, whatever ends us
        failure: Failure | None = None
        try:
            failure = await self._read(request_iterator)
        except asyncio.CancelledError:
            if not self.stalled:  # the transport refused a message above its hard cap, or the robot went away
                log.warning("episode stream from %s ended by the transport (message above %d bytes, or peer gone)",
                            self.peer, TRANSPORT_MAX_MESSAGE_BYTES)
                raise
            reader.uncancel()  # cancelled by _write_acks: the robot reads no acks
        finally:
            self.reading = False
            self.pending.put_nowait(None)
            try:
                await asyncio.wait([writer])  # acks for everything stored before the failure still go out
                if not writer.cancelled() and writer.exception() is not None:
                    raise writer.exception()
            except Exception as exc:  # the store could not write (disk full, I/O error): nothing more is acked
                log.error("episode store write failed: %s", exc)
                failure = failure or (grpc.StatusCode.UNAVAILABLE, f"learner could not store the chunk ({exc}); "
                                      "the robot keeps it spooled and retries", None)
            finally:  # what this stream still holds goes back now (cancelled mid-queue, or stalled), once
                self.released = True
                self.held.give(self.own.held)
        if self.stalled:
            failure = (grpc.StatusCode.RESOURCE_EXHAUSTED, f"an acknowledgement was not read for {ACK_STALL_S:g} s; "
                       "the stream is ended (read acks as they come)", None)
        return failure

    async def _read(self, request_iterator) -> Failure | None:
        chunk = None
        try:
            async for chunk in request_iterator:
                size = chunk.ByteSize()  # once: protobuf works it out by walking the whole message
                if failure := await self.servicer.check_chunk(chunk, size, self.embodiments, self.context):
                    return failure
                await self.limits.episodes(chunk.robot_id).take(size)  # over its rate: it waits
                arrays = wire.decode_chunk_steps(chunk, self.embodiments[chunk.robot_id])
                if not self.continuity.known(chunk):  # once per episode and stream: what the index holds of it
                    self.continuity.learn(chunk, await asyncio.to_thread(self.store.episode_spans, chunk.robot_id,
                                                                         chunk.episode_id))
                if problem := self.continuity.accept(chunk, int(arrays["step_index"][0]), len(chunk.steps)):
                    return grpc.StatusCode.INVALID_ARGUMENT, f"episode {chunk.episode_id}: {problem}", chunk
                await self.own.take(size)  # at this stream's cap: read no further until its acks catch up
                try:  # what `own` holds, `held` holds too, whatever ends the wait
                    room = await self.held.take(size, timeout=PENDING_WAIT_S)
                except BaseException:
                    self.own.give(size)
                    raise
                if not room:
                    self.own.give(size)
                    self.limits.pending_refusals += 1
                    return (grpc.StatusCode.RESOURCE_EXHAUSTED, "the learner holds as many unacknowledged bytes as "
                            "it may; the chunk stays spooled on the robot, which retries", None)
                self.pending.put_nowait((chunk, asyncio.ensure_future(self.store.put_chunk(chunk, arrays)), size))
        except wire.WireError as exc:
            return grpc.StatusCode.INVALID_ARGUMENT, str(exc), chunk
        except DecodeError as exc:  # bytes that are not an EpisodeChunk at all
            return grpc.StatusCode.INVALID_ARGUMENT, f"malformed EpisodeChunk message: {exc}", None
        return None

    async def _write_acks(self, reader: asyncio.Task) -> None:
        failed = None  # the store could not write: nothing more is acked, all is released
        gone = False   # the ack could not be written (the robot went away): none is written after it
        while (item := await self.pending.get()) is not None:
            chunk, stored, size = item
            try:
                try:
                    status = await stored
                except Exception as exc:
                    failed = failed or exc
                    continue
                if failed is not None or gone:
                    continue
                try:
                    await asyncio.wait_for(self.servicer.acknowledge(self.context, chunk, status), ACK_STALL_S)
                except TimeoutError:  # the robot reads no acks: end the stream rather than hold its bytes
                    self.stalled = True
                    if self.reading:
                        reader.cancel()
                    return
                except Exception as exc:  # the transport's: the call is over; the robot re-sends what it missed
                    log.info("episode stream from %s: ack not written (%s)", self.peer, exc)
                    gone = True
            finally:
                self._release(size)
        if failed is not None:
            raise failed

    def _release(self, size: int) -> None:
        """One chunk's bytes back: to the stream, and to the learner unless all went back already."""
        self.own.give(size)
        if not self.released:
            self.held.give(size)

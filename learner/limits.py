"""Per-robot limits: one runaway or hostile client cannot starve the others.

Episode streams: each robot id has a token bucket of bytes per second (with a burst). A robot
over its rate is not refused: the server waits before reading its next chunk, so gRPC's flow
control pushes back on that robot alone (its spool holds what it cannot send yet) while every
other stream is read as before. Bytes read but not yet acknowledged are capped per stream (a
client that sends without waiting for its acks is simply read no further until they catch up) and
for the whole learner (a stream that cannot get room within a few seconds is refused with
RESOURCE_EXHAUSTED; the robot keeps the chunk spooled and retries). Control streams: live pictures beyond `previews_per_s` are
dropped (they are replaced by the next one anyway); heartbeats, help requests and command
acknowledgements always pass. Message and chunk sizes are bounded by wire.MAX_MESSAGE_BYTES.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass
class RobotLimits:
    mb_per_s: float = 16.0       # episode bytes per robot (a 10 Hz robot with two 96x96 cameras sends ~0.6)
    burst_mb: float = 8.0
    previews_per_s: float = 10.0
    # Bytes read from episode streams and not yet acknowledged (decoded chunks waiting for the
    # store): per stream, and for the whole learner. A robot keeps at most 4 chunks in flight, each
    # at most wire.MAX_MESSAGE_BYTES (4 MiB): 16 MB holds them.
    stream_pending_mb: float = 16.0
    pending_mb: float = 512.0
    # An episode whose first chunk was stored longer ago than this takes no more chunks and is
    # closed as truncated (a robot that never ends it, or comes back after the bound).
    episode_open_s: float = 3600.0

    def __post_init__(self):
        if min(self.mb_per_s, self.burst_mb, self.previews_per_s, self.stream_pending_mb, self.pending_mb,
               self.episode_open_s) <= 0:
            raise ValueError("robot limits must be positive")


class PendingBytes:
    """A cap on bytes held between reading a chunk and acknowledging it. `take` waits while the
    cap is reached (one message larger than the cap passes alone); `give` hands bytes back. One
    event loop uses it, so nothing comes between the check and the count."""

    def __init__(self, cap: float):
        self.cap, self.held, self.peak = cap, 0, 0
        self._freed = asyncio.Event()

    async def take(self, amount: int, timeout: float | None = None) -> bool:
        """Holds `amount` once it fits; False if it did not fit within `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.held and self.held + amount > self.cap:
            freed = self._freed  # set by the next `give`, which starts a fresh one: no wakeup is lost
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            try:
                await asyncio.wait_for(freed.wait(), left)
            except asyncio.TimeoutError:
                return False
        self.held += amount
        self.peak = max(self.peak, self.held)
        return True

    def give(self, amount: int) -> None:
        self.held -= amount
        self._freed.set()
        self._freed = asyncio.Event()


class TokenBucket:
    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.updated = time.monotonic()
        self.waited_s = 0.0

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def try_take(self, amount: float) -> bool:
        self._refill()
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False

    async def take(self, amount: float) -> None:
        """Waits until `amount` is available. An amount above the burst waits for a full bucket
        and leaves it in debt, so large messages are charged in full."""
        needed = min(amount, self.burst)
        self._refill()
        while self.tokens < needed:
            wait = (needed - self.tokens) / self.rate
            self.waited_s += wait
            await asyncio.sleep(wait)
            self._refill()
        self.tokens -= amount


class FleetLimits:
    """The buckets of every robot id seen."""

    def __init__(self, limits: RobotLimits):
        self.limits = limits
        self.pending = PendingBytes(limits.pending_mb * 1e6)  # every stream's unacknowledged bytes together
        self.pending_refusals = 0
        self._episodes: dict[str, TokenBucket] = {}
        self._previews: dict[str, TokenBucket] = {}
        self.previews_dropped = 0

    def episodes(self, robot_id: str) -> TokenBucket:
        bucket = self._episodes.get(robot_id)
        if bucket is None:
            bucket = self._episodes[robot_id] = TokenBucket(self.limits.mb_per_s * 1e6, self.limits.burst_mb * 1e6)
        return bucket

    def preview_allowed(self, robot_id: str) -> bool:
        bucket = self._previews.get(robot_id)
        if bucket is None:
            rate = self.limits.previews_per_s
            bucket = self._previews[robot_id] = TokenBucket(rate, max(1.0, rate))
        allowed = bucket.try_take(1)
        self.previews_dropped += not allowed
        return allowed

    def throttled_s(self, robot_id: str) -> float:
        bucket = self._episodes.get(robot_id)
        return bucket.waited_s if bucket else 0.0

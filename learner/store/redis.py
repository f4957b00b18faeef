"""The episode index in Redis, for several ingest replicas on one shared volume.

Redis hashes hold robots, episodes and chunks, written by one Lua script per chunk, so several
replicas can store chunks of the same episode (a robot that failed over mid-episode) and the
episode still completes exactly once; a complete episode is appended to the stream
`fleet:episodes`, which the trainer reads through a consumer group. Chunk files live on the
shared --data volume exactly as in the embedded store.

Durability relied on: a chunk is acknowledged only after its file is fsynced and renamed on the
shared volume (directory fsynced) and the index script has returned. Redis must run with
`appendonly yes` and `appendfsync always` (deploy/), which makes it fsync the AOF before
answering. A single Redis primary is assumed (the script touches keys of several hash slots).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import redis

from core.episode import EpisodeArrays
from core.wire import PROTO_TO_KIND
from fleet.v1 import fleet_pb2 as pb
from learner.redis_client import connect, text as _text
from learner.store.base import TRUNCATED, StoredEpisode, chunk_summary, load_episode_arrays

log = logging.getLogger("fleetlearn.redis")

EPISODE_STREAM = "fleet:episodes"
DEMO_COUNTS = "fleet:demonstrations"   # task -> complete demonstrations
STATS = "fleet:stats"                  # chunks, steps stored
OPEN_EPISODES = "fleet:open"           # episode keys not yet complete, by first_stored_at


def _episode_key(robot_id: str, episode_id: str) -> str:
    return f"fleet:episode:{robot_id}:{episode_id}"


def _chunks_key(robot_id: str, episode_id: str) -> str:
    return f"fleet:chunks:{robot_id}:{episode_id}"


# How both scripts below end once an episode is complete: its totals, out of the open set, one
# entry on the trainer's stream, and one more demonstration of its task if it is one.
_COMPLETE = """
redis.call('HSET', ep, 'complete', '1', 'completed_at', now, 'human_steps', human, 'takeovers', takeovers)
redis.call('ZREM', open, ep)
local e = redis.call('HGETALL', ep)
redis.call('XADD', stream, '*', unpack(e))
if redis.call('HGET', ep, 'kind') == 'demonstration' then
  redis.call('HINCRBY', demos, redis.call('HGET', ep, 'task'), 1)
end
return 1
"""

# One chunk into the index, atomically: the chunk (first writer wins), the episode header, its
# outcome, and, when this chunk completes the episode, its totals and one stream entry.
_ADD_CHUNK = """
local chunks, ep, stream, demos, stats, open = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local now = ARGV[11]
local seq = ARGV[1]
if redis.call('HSETNX', chunks, seq, ARGV[2]) == 0 then return 0 end
redis.call('HINCRBY', stats, 'chunks', 1)
redis.call('HINCRBY', stats, 'steps', tonumber(ARGV[3]))
if redis.call('EXISTS', ep) == 0 then
  redis.call('HSET', ep, 'robot_id', ARGV[4], 'episode_id', ARGV[5], 'task', ARGV[6], 'instruction', ARGV[7],
             'kind', ARGV[8], 'seed', ARGV[9], 'policy_version', ARGV[10], 'first_stored_at', ARGV[11], 'complete', '0')
  redis.call('ZADD', open, tonumber(ARGV[11]), ep)
end
if ARGV[12] == '1' and redis.call('HEXISTS', ep, 'final_sequence') == 0 then
  redis.call('HSET', ep, 'final_sequence', seq, 'num_steps', ARGV[13], 'success', ARGV[14],
             'total_reward', ARGV[15], 'termination', ARGV[16])
end
local final = redis.call('HGET', ep, 'final_sequence')
if (not final) or redis.call('HGET', ep, 'complete') == '1' then return 1 end
final = tonumber(final)
if redis.call('HLEN', chunks) ~= final + 1 then return 1 end
local human, takeovers, previous = 0, 0, -1
local intervention = tonumber(ARGV[17])
for s = 0, final do
  local raw = redis.call('HGET', chunks, tostring(s))
  if not raw then return 1 end
  local c = cjson.decode(raw)
  human = human + c.human_steps
  takeovers = takeovers + c.takeover_starts
  if c.first_source == intervention and previous ~= intervention then takeovers = takeovers + 1 end
  previous = c.last_source
end
""" + _COMPLETE

# An episode open too long, closed as truncated (learner/store/base.py: EpisodeIndex.close_stale,
# truncated_final): it ends at the last chunk of the run 0, 1, 2, ... stored and completes from
# those chunks, or, without chunk 0, is closed empty (final -1, never complete).
_CLOSE_STALE = """
local chunks, ep, stream, demos, open = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now = ARGV[1]
redis.call('ZREM', open, ep)
if redis.call('HGET', ep, 'complete') ~= '0' then return 0 end
local final = redis.call('HGET', ep, 'final_sequence')
if final and tonumber(final) < 0 then return 0 end
local human, takeovers, previous, steps, s = 0, 0, -1, 0, 0
local intervention = tonumber(ARGV[2])
while true do
  local raw = redis.call('HGET', chunks, tostring(s))
  if not raw then break end
  local c = cjson.decode(raw)
  steps = steps + c.num_steps
  human = human + c.human_steps
  takeovers = takeovers + c.takeover_starts
  if c.first_source == intervention and previous ~= intervention then takeovers = takeovers + 1 end
  previous = c.last_source
  s = s + 1
end
redis.call('HSET', ep, 'final_sequence', s - 1, 'num_steps', steps, 'success', 0, 'termination', ARGV[3])
redis.call('HDEL', ep, 'total_reward')
if s == 0 then return 1 end
""" + _COMPLETE


class RedisIndex:
    """The episode index in Redis, for EpisodeStore's writer thread (several replicas at once)."""

    def __init__(self, url: str, replica_id: str = ""):
        self.url, self.replica_id = url, replica_id
        self.client = connect(url)
        self._add_chunk = self.client.register_script(_ADD_CHUNK)
        self._close_stale = self.client.register_script(_CLOSE_STALE)

    def register_robot(self, robot_id: str, embodiment: pb.Embodiment, tasks: list[dict]) -> None:
        now = time.time()
        key = f"fleet:robot:{robot_id}"
        pipe = self.client.pipeline()
        pipe.hsetnx(key, "registered_at", now)
        pipe.hset(key, mapping={"embodiment": embodiment.SerializeToString(), "tasks": json.dumps(tasks),
                                "last_seen": now})
        pipe.sadd("fleet:robots", robot_id)
        pipe.execute()

    def robot_embodiment(self, robot_id: str) -> pb.Embodiment | None:
        raw = self.client.hget(f"fleet:robot:{robot_id}", "embodiment")
        return pb.Embodiment.FromString(raw) if raw is not None else None

    def stored(self, keys: list[tuple[str, str, int]]) -> set[tuple[str, str, int]]:
        pipe = self.client.pipeline(transaction=False)
        for robot_id, episode_id, sequence in keys:
            pipe.hexists(_chunks_key(robot_id, episode_id), str(sequence))
        return {key for key, exists in zip(keys, pipe.execute()) if exists}

    def add(self, fresh: list[tuple[pb.EpisodeChunk, dict, tuple[str, int]]]) -> set[tuple[str, str, int]]:
        """Indexes written chunks; returns those another replica indexed first (duplicates)."""
        now = repr(time.time())
        pipe = self.client.pipeline(transaction=False)
        for chunk, arrays, (rel, size) in fresh:
            meta = {"path": rel, "num_bytes": size, "first_step": int(arrays["step_index"][0]),
                    "num_steps": len(arrays["source"]), "stored_at": float(now), "replica": self.replica_id,
                    **chunk_summary(arrays)}
            o = chunk.outcome
            self._add_chunk(keys=[_chunks_key(chunk.robot_id, chunk.episode_id),
                                  _episode_key(chunk.robot_id, chunk.episode_id), EPISODE_STREAM, DEMO_COUNTS, STATS,
                                  OPEN_EPISODES],
                            args=[chunk.sequence, json.dumps(meta), meta["num_steps"], chunk.robot_id, chunk.episode_id,
                                  chunk.task, chunk.instruction, PROTO_TO_KIND[chunk.kind], chunk.seed,
                                  chunk.policy_version, now, int(chunk.episode_end), o.num_steps, int(o.success),
                                  repr(o.total_reward), o.termination, pb.ACTION_SOURCE_INTERVENTION],
                            client=pipe)
        added = pipe.execute()
        return {(c.robot_id, c.episode_id, c.sequence) for (c, _, _), new in zip(fresh, added) if not new}

    def episode_spans(self, robot_id: str, episode_id: str) -> StoredEpisode:
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(_episode_key(robot_id, episode_id), "final_sequence", "first_stored_at")
        pipe.hgetall(_chunks_key(robot_id, episode_id))
        (final, opened), chunks = pipe.execute()
        spans = {int(seq): (meta["first_step"], meta["num_steps"])
                 for seq, meta in ((s, json.loads(raw)) for s, raw in chunks.items())}
        return StoredEpisode(int(final) if final is not None else None, spans,
                             float(opened) if opened is not None else None)

    def close_stale(self, opened_before: float) -> list[tuple[str, str]]:
        closed = []
        for key in self.client.zrangebyscore(OPEN_EPISODES, "-inf", f"({opened_before!r}"):
            key = _text(key)
            chunks = "fleet:chunks:" + key[len("fleet:episode:"):]
            if self._close_stale(keys=[chunks, key, EPISODE_STREAM, DEMO_COUNTS, OPEN_EPISODES],
                                 args=[repr(time.time()), pb.ACTION_SOURCE_INTERVENTION, TRUNCATED]):
                robot_id, episode_id = self.client.hmget(key, "robot_id", "episode_id")
                closed.append((_text(robot_id), _text(episode_id)))
        return closed

    def close(self) -> None:
        self.client.close()


def stored_totals(client: redis.Redis) -> dict[str, int]:
    """Chunks and steps the index holds (counted once each, by the index script)."""
    raw = client.hgetall(STATS)
    return {_text(k): int(v) for k, v in raw.items()}


def _row(fields: dict) -> dict:
    """A stream entry or episode hash as the row the trainer reads (the SQLite row's fields)."""
    row = {_text(k): _text(v) for k, v in fields.items()}
    for name in ("seed", "policy_version", "final_sequence", "num_steps", "success", "human_steps", "takeovers",
                 "complete"):
        if name in row:
            row[name] = int(row[name])
    for name in ("completed_at", "first_stored_at", "total_reward"):
        if name in row:
            row[name] = float(row[name])
    return row


class RedisStoreReader:
    """The trainer's view of a Redis-indexed store: complete episodes arrive through the consumer
    group `group` of the stream `fleet:episodes`; their arrays are read from the shared volume.

    The trainer keeps what it learns from in memory, so a trainer that starts again first replays
    what its group was already given (XRANGE up to the group's last delivered id), acknowledges
    what its previous life took but never acknowledged, then reads new entries with '>'. An entry
    is acknowledged on the call after the one that returned it, once the trainer has used it."""

    def __init__(self, root: Path, url: str, group: str = "trainer", consumer: str = "rank-0"):
        self.root = Path(root)
        self.client = connect(url)
        self.group, self.consumer = group, consumer
        self._started = False
        self._unacked: list[bytes] = []

    def _start(self) -> list[dict]:
        try:
            self.client.xgroup_create(EPISODE_STREAM, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        info = next(g for g in self.client.xinfo_groups(EPISODE_STREAM) if _text(g["name"]) == self.group)
        last = _text(info["last-delivered-id"])
        history = self.client.xrange(EPISODE_STREAM, "-", last) if last != "0-0" else []
        pending = self.client.xreadgroup(self.group, self.consumer, {EPISODE_STREAM: "0"})
        self._unacked = [entry_id for _, entries in pending for entry_id, _ in entries]
        if history:
            log.info("%s: replaying %d episodes this group was given before (%d never acknowledged)",
                     self.group, len(history), len(self._unacked))
        self._started = True
        return [_row(fields) for _, fields in history]

    def complete_episodes(self, after_completed_at: float = 0.0) -> list[dict]:
        if self._unacked:
            self.client.xack(EPISODE_STREAM, self.group, *self._unacked)
            self._unacked = []
        rows = [] if self._started else self._start()
        while True:
            response = self.client.xreadgroup(self.group, self.consumer, {EPISODE_STREAM: ">"}, count=500)
            entries = [e for _, stream_entries in response for e in stream_entries]
            self._unacked += [entry_id for entry_id, _ in entries]
            rows += [_row(fields) for _, fields in entries]
            if len(entries) < 500:
                return rows

    def load_episode(self, row: dict) -> EpisodeArrays:
        arrays = load_episode_arrays(self.root, [m["path"] for m in self.chunks(row)])
        return EpisodeArrays(row["robot_id"], row["episode_id"], row["task"], row["instruction"], row["kind"],
                             row["policy_version"], bool(row["success"]), arrays)

    def robot_embodiment(self, robot_id: str) -> pb.Embodiment | None:
        raw = self.client.hget(f"fleet:robot:{robot_id}", "embodiment")
        return pb.Embodiment.FromString(raw) if raw is not None else None

    def demonstration_counts(self) -> dict[str, int]:
        return {_text(k): int(v) for k, v in self.client.hgetall(DEMO_COUNTS).items()}

    def chunks(self, row: dict) -> list[dict]:
        """An episode's chunks as indexed (path, steps, the replica that stored it), in order."""
        chunks = self.client.hgetall(_chunks_key(row["robot_id"], row["episode_id"]))
        final = row.get("final_sequence")  # chunks past it (an episode closed as truncated) are not the episode's
        return [json.loads(chunks[k]) for k in sorted(chunks, key=int) if final is None or int(k) <= final]

    def episodes(self, robot_id: str | None = None) -> list[dict]:
        """Every indexed episode (complete or not), optionally of one robot: for tools and tests."""
        rows = []
        for key in self.client.scan_iter(match=f"fleet:episode:{robot_id or '*'}:*", count=1000):
            rows.append(_row(self.client.hgetall(key)))
        return rows

    def close(self) -> None:
        self.client.close()



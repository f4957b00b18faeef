"""Scale-out through Redis: the episode index, the trainer's episode stream, policy versions and
the control relay, shared by several ingest replicas (`fleet ingest --redis URL`).

What lives where
    chunk files and checkpoints   the shared --data volume, exactly as in the embedded store
    episode index                 Redis hashes (robots, episodes, chunks), written by one Lua
                                  script per chunk, so that several replicas can store chunks of
                                  the same episode (a robot that failed over mid-episode) and the
                                  episode still completes exactly once
    complete episodes             the Redis Stream `fleet:episodes`, one entry per episode, read
                                  by the trainer through a consumer group
    policy versions               Redis hashes and a publication list; every replica's publisher
                                  polls the current publication, so an announcement reaches every
                                  replica and so every robot
    robot registry                `fleet:at:ROBOT` -> replica id, expiring unless heartbeats renew it
    control relay                 a person's command for a robot connected to another replica is
                                  published on that replica's channel and answered on a reply channel

Durability relied on: a chunk is acknowledged only after (1) its file is fsynced and renamed on
the shared volume and the directory fsynced, and (2) the index script has returned. Redis must
run with `appendonly yes` and `appendfsync always` (deploy/), which makes it write and fsync the
AOF before answering, so an acknowledged chunk survives a crash of Redis, of the replica, or of
both. A single Redis primary is assumed (the script touches keys of several hash slots): not a
Redis Cluster.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import redis
import redis.asyncio as aioredis
from safetensors.numpy import load_file

from fleet.v1 import fleet_pb2 as pb
from core.wire import PROTO_TO_KIND
from learner.control import ControlError, FleetControl, RobotNotConnected
from learner.distributed import LeaseHeld
from core.episode import EpisodeArrays
from learner.store import chunk_summary
from learner.versions import Publication

log = logging.getLogger("fleetlearn.redis")

EPISODE_STREAM = "fleet:episodes"
DEMO_COUNTS = "fleet:demonstrations"   # task -> complete demonstrations
STATS = "fleet:stats"                  # chunks, steps stored
ROBOT_TTL_S = 10                       # a robot's registry entry lapses after this without heartbeats
RELAY_TIMEOUT_S = 5.0


def connect(url: str) -> redis.Redis:
    client = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5, health_check_interval=10)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ConnectionError(f"cannot reach Redis at {url}: {exc}") from exc
    return client


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _episode_key(robot_id: str, episode_id: str) -> str:
    return f"fleet:episode:{robot_id}:{episode_id}"


def _chunks_key(robot_id: str, episode_id: str) -> str:
    return f"fleet:chunks:{robot_id}:{episode_id}"


# One chunk into the index, atomically: the chunk (first writer wins), the episode header, its
# outcome, and, when this chunk completes the episode, its totals and one stream entry.
_ADD_CHUNK = """
local chunks, ep, stream, demos, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local seq = ARGV[1]
if redis.call('HSETNX', chunks, seq, ARGV[2]) == 0 then return 0 end
redis.call('HINCRBY', stats, 'chunks', 1)
redis.call('HINCRBY', stats, 'steps', tonumber(ARGV[3]))
if redis.call('EXISTS', ep) == 0 then
  redis.call('HSET', ep, 'robot_id', ARGV[4], 'episode_id', ARGV[5], 'task', ARGV[6], 'instruction', ARGV[7],
             'kind', ARGV[8], 'seed', ARGV[9], 'policy_version', ARGV[10], 'first_stored_at', ARGV[11], 'complete', '0')
end
if ARGV[12] == '1' then
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
redis.call('HSET', ep, 'complete', '1', 'completed_at', ARGV[11], 'human_steps', human, 'takeovers', takeovers)
local e = redis.call('HGETALL', ep)
redis.call('XADD', stream, '*', unpack(e))
if redis.call('HGET', ep, 'kind') == 'demonstration' then
  redis.call('HINCRBY', demos, redis.call('HGET', ep, 'task'), 1)
end
return 1
"""


class RedisIndex:
    """The episode index in Redis, for EpisodeStore's writer thread (several replicas at once)."""

    def __init__(self, url: str, replica_id: str = ""):
        self.url, self.replica_id = url, replica_id
        self.client = connect(url)
        self._add_chunk = self.client.register_script(_ADD_CHUNK)

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
                                  _episode_key(chunk.robot_id, chunk.episode_id), EPISODE_STREAM, DEMO_COUNTS, STATS],
                            args=[chunk.sequence, json.dumps(meta), meta["num_steps"], chunk.robot_id, chunk.episode_id,
                                  chunk.task, chunk.instruction, PROTO_TO_KIND[chunk.kind], chunk.seed,
                                  chunk.policy_version, now, int(chunk.episode_end), o.num_steps, int(o.success),
                                  repr(o.total_reward), o.termination, pb.ACTION_SOURCE_INTERVENTION],
                            client=pipe)
        added = pipe.execute()
        return {(c.robot_id, c.episode_id, c.sequence) for (c, _, _), new in zip(fresh, added) if not new}

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
        parts = [load_file(str(self.root / m["path"])) for m in self.chunks(row)]
        arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
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
        return [json.loads(chunks[k]) for k in sorted(chunks, key=int)]

    def episodes(self, robot_id: str | None = None) -> list[dict]:
        """Every indexed episode (complete or not), optionally of one robot: for tools and tests."""
        rows = []
        for key in self.client.scan_iter(match=f"fleet:episode:{robot_id or '*'}:*", count=1000):
            rows.append(_row(self.client.hgetall(key)))
        return rows

    def close(self) -> None:
        self.client.close()


class RedisVersionRegistry:
    """VersionRegistry's interface on Redis: versions, and publications in order."""

    def __init__(self, root: Path, url: str):
        self.root = Path(root)
        self.client = connect(url)

    def checkpoint_dir(self, version: int) -> Path:
        return self.root / "checkpoints" / f"v{version:06d}"

    def add(self, version: int, info: dict) -> None:
        rel = str(self.checkpoint_dir(version).relative_to(self.root))
        self.client.hset("fleet:versions", str(version),
                         json.dumps({"path": rel, "created_at": time.time(), "info": info}))

    def all(self) -> list[int]:
        return sorted(int(v) for v in self.client.hkeys("fleet:versions"))

    def latest(self) -> int | None:
        versions = self.all()
        return versions[-1] if versions else None

    def info(self, version: int) -> dict | None:
        raw = self.client.hget("fleet:versions", str(version))
        return json.loads(raw)["info"] if raw else None

    def publish(self, version: int, note: str = "", rollback: bool = False) -> None:
        if not self.client.hexists("fleet:versions", str(version)):
            raise KeyError(f"policy version {version} does not exist; known: {self.all()}")
        # The id and the append in one step, so publications from several writers stay in id order.
        self.client.eval("local p = cjson.decode(ARGV[1]); p.id = redis.call('INCR', KEYS[1]); "
                         "return redis.call('RPUSH', KEYS[2], cjson.encode(p))", 2, "fleet:publication_id",
                         "fleet:publications", json.dumps({"version": version, "published_at": time.time(),
                                                          "rollback": rollback, "note": note}))

    def publications(self) -> list[dict]:
        return [json.loads(p) for p in self.client.lrange("fleet:publications", 0, -1)]

    def current(self) -> Publication | None:
        last = self.client.lindex("fleet:publications", -1)
        if last is None:
            return None
        p = json.loads(last)
        entry = json.loads(self.client.hget("fleet:versions", str(p["version"])))
        return Publication(p["id"], p["version"], self.root / entry["path"], p["published_at"], p["rollback"], p["note"])

    def close(self) -> None:
        self.client.close()


class TrainerLease:
    """One trainer per store: its rank 0 holds `fleet:trainer` in Redis, renewed while it runs.
    A second trainer (another `fleet train`, or a `fleet learner --redis` that trains) is refused
    instead of publishing the same version numbers over the first one's."""

    TTL_S = 30

    def __init__(self, url: str, wait_s: float = 0.0):
        """Takes the lease, waiting up to `wait_s` for a holder to let it lapse (a trainer killed
        with -9 leaves its lease for up to TTL_S)."""
        self.client = connect(url)
        self.owner = f"{default_replica_id()}-{uuid.uuid4().hex[:8]}"
        deadline = time.monotonic() + wait_s
        while not self.client.set("fleet:trainer", self.owner, nx=True, ex=self.TTL_S):
            if time.monotonic() >= deadline:
                holder = _text(self.client.get("fleet:trainer") or b"?")
                raise LeaseHeld(f"another trainer ({holder}) is training on this store; run one trainer "
                                f"(`fleet train`, under torchrun for several ranks) and `fleet ingest` replicas")
            time.sleep(1.0)
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="trainer-lease", daemon=True)
        self._renewer.start()

    _RENEW = ("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end "
              "return 0")

    def _renew(self) -> None:
        while not self._stop.wait(self.TTL_S / 3):
            try:
                if not self.client.eval(self._RENEW, 1, "fleet:trainer", self.owner, self.TTL_S):
                    log.error("the trainer lease was lost (Redis restarted without it, or it lapsed)")
            except redis.RedisError as exc:
                log.warning("trainer lease renewal failed: %s", exc)

    def release(self) -> None:
        self._stop.set()
        self.client.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
                         "return 0", 1, "fleet:trainer", self.owner)
        self.client.close()


class ControlRelay:
    """Makes FleetControl fleet-wide across replicas.

    Each replica records the robots whose control stream it holds (`fleet:at:ROBOT`, renewed by
    heartbeats, lapsing after ROBOT_TTL_S) and listens on its own channel. A person's command for
    a robot held elsewhere is published there, carried out by that replica's FleetControl (which
    owns the robot's operator state), and answered on a reply channel: the commands it queued, or
    the refusal with its reason."""

    def __init__(self, url: str, replica_id: str, control: FleetControl):
        self.url, self.replica_id, self.control = url, replica_id, control
        self.client = aioredis.Redis.from_url(url)
        self._renewed: dict[str, float] = {}
        self._listener: asyncio.Task | None = None
        self._pubsub = None

    @property
    def channel(self) -> str:
        return f"fleet:replica:{self.replica_id}"

    async def start(self) -> None:
        await self.client.ping()
        self._pubsub = self.client.pubsub()
        await self._pubsub.subscribe(self.channel)
        self._listener = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
        for robot_id in list(self._renewed):
            await self.robot_left(robot_id)
        if self._pubsub is not None:
            await self._pubsub.aclose()
        await self.client.aclose()

    # -- registry ------------------------------------------------------------------------------

    async def robot_here(self, robot_id: str, force: bool = False) -> None:
        """The robot's control stream is on this replica (called on open and on heartbeats)."""
        now = time.monotonic()
        if not force and now - self._renewed.get(robot_id, 0.0) < 1.0:
            return
        self._renewed[robot_id] = now
        await self.client.set(f"fleet:at:{robot_id}", self.replica_id, ex=ROBOT_TTL_S)

    async def robot_left(self, robot_id: str) -> None:
        self._renewed.pop(robot_id, None)
        # Only if it still points here: the robot may already have reconnected to another replica.
        await self.client.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
                               "return 0", 1, f"fleet:at:{robot_id}", self.replica_id)

    async def where(self, robot_id: str) -> str | None:
        replica = await self.client.get(f"fleet:at:{robot_id}")
        return _text(replica) if replica is not None else None

    async def connected_robots(self) -> dict[str, str]:
        """robot id -> replica, for every robot connected anywhere."""
        keys = [k async for k in self.client.scan_iter(match="fleet:at:*", count=1000)]
        values = await self.client.mget(keys) if keys else []
        return {_text(k)[len("fleet:at:"):]: _text(v) for k, v in zip(keys, values) if v is not None}

    # -- commands ------------------------------------------------------------------------------

    async def issue(self, op: str, robot_id: str, args: dict) -> list[pb.LearnerCommand]:
        """Carries out a person's command here if the robot is connected here, else on its replica."""
        if robot_id in self.control.sessions:
            return self.control.apply(op, robot_id, args)
        replica = await self.where(robot_id)
        if replica is None or replica == self.replica_id:
            raise RobotNotConnected(f"robot {robot_id!r} is not connected to any replica")
        reply_channel = f"fleet:reply:{uuid.uuid4().hex}"
        pubsub = self.client.pubsub()
        await pubsub.subscribe(reply_channel)
        try:
            request = json.dumps({"op": op, "robot_id": robot_id, "args": args, "reply": reply_channel})
            if await self.client.publish(f"fleet:replica:{replica}", request) == 0:
                raise RobotNotConnected(f"robot {robot_id!r} is registered at replica {replica}, which is not listening")
            deadline = time.monotonic() + RELAY_TIMEOUT_S
            while time.monotonic() < deadline:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                if message is None:
                    continue
                answer = json.loads(message["data"])
                if "error" in answer:
                    kind = RobotNotConnected if answer["kind"] == "not_connected" else ControlError
                    raise kind(answer["error"])
                return [pb.LearnerCommand.FromString(bytes.fromhex(c)) for c in answer["commands"]]
            raise ControlError(f"replica {replica} holding {robot_id!r} did not answer in {RELAY_TIMEOUT_S:.0f} s")
        finally:
            await pubsub.unsubscribe(reply_channel)
            await pubsub.aclose()

    async def _listen(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    await self._serve(json.loads(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception:  # a malformed request, or Redis briefly away: keep listening
                log.exception("control relay: request failed")
                await asyncio.sleep(0.2)

    async def _serve(self, request: dict) -> None:
        try:
            commands = self.control.apply(request["op"], request["robot_id"], request["args"])
            answer = {"commands": [c.SerializeToString().hex() for c in commands]}
            log.info("relayed %s for %s", request["op"], request["robot_id"])
        except ControlError as exc:
            answer = {"error": str(exc), "kind": "not_connected" if isinstance(exc, RobotNotConnected) else "refused"}
        except Exception as exc:  # a malformed request: the asker learns why instead of waiting out the timeout
            log.warning("control relay: bad request %s: %s", request, exc)
            answer = {"error": f"bad relayed command: {exc!r}", "kind": "refused"}
        await self.client.publish(request["reply"], json.dumps(answer))


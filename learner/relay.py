"""The control relay: FleetControl made fleet-wide across ingest replicas through Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import redis.asyncio as aioredis

from fleet.v1 import fleet_pb2 as pb
from learner.control import ControlError, FleetControl, RobotNotConnected, apply_command
from learner.redis_client import text as _text

log = logging.getLogger("fleetlearn.relay")

ROBOT_TTL_S = 10                       # a robot's registry entry lapses after this without heartbeats
RELAY_TIMEOUT_S = 5.0


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
            return apply_command(self.control, op, robot_id, args)
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
            commands = apply_command(self.control, request["op"], request["robot_id"], request["args"])
            answer = {"commands": [c.SerializeToString().hex() for c in commands]}
            log.info("relayed %s for %s", request["op"], request["robot_id"])
        except ControlError as exc:
            answer = {"error": str(exc), "kind": "not_connected" if isinstance(exc, RobotNotConnected) else "refused"}
        except Exception as exc:  # a malformed request: the asker learns why instead of waiting out the timeout
            log.warning("control relay: bad request %s: %s", request, exc)
            answer = {"error": f"bad relayed command: {exc!r}", "kind": "refused"}
        await self.client.publish(request["reply"], json.dumps(answer))


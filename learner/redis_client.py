"""The one way the learner connects to Redis (scale-out: `--redis URL`), and names in it."""

from __future__ import annotations

import os
import socket

import redis


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


def text(value) -> str:
    """A Redis reply (bytes) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)

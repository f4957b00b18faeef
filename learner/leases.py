"""One trainer per store: the trainer lease.

Scaled out, rank 0 of the trainer holds `fleet:trainer` in Redis, renewed while it runs. A second
trainer (another `fleet train`, or a `fleet learner --redis` that trains) is refused instead of
publishing the same version numbers over the first one's.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid


log = logging.getLogger("fleetlearn.lease")


class LeaseHeld(RuntimeError):
    """Another trainer holds the store's trainer lease."""


class TrainerLease:
    """The lease in Redis (module docstring)."""

    TTL_S = 30

    def __init__(self, url: str, wait_s: float = 0.0):
        """Takes the lease, waiting up to `wait_s` for a holder to let it lapse (a trainer killed
        with -9 leaves its lease for up to TTL_S)."""
        from learner.redis_client import connect, default_replica_id  # noqa: PLC0415 (the embedded trainer has no Redis)

        self.client = connect(url)
        self.owner = f"{default_replica_id()}-{uuid.uuid4().hex[:8]}"
        deadline = time.monotonic() + wait_s
        while not self.client.set("fleet:trainer", self.owner, nx=True, ex=self.TTL_S):
            if time.monotonic() >= deadline:
                holder = (self.client.get("fleet:trainer") or b"?").decode()
                raise LeaseHeld(f"another trainer ({holder}) is training on this store; run one trainer "
                                f"(`fleet train`, under torchrun for several ranks) and `fleet ingest` replicas")
            time.sleep(1.0)
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="trainer-lease", daemon=True)
        self._renewer.start()

    _RENEW = ("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end "
              "return 0")

    def _renew(self) -> None:
        import redis  # noqa: PLC0415

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



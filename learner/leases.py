"""One trainer per store: the trainer lease.

Scaled out, rank 0 of the trainer holds `fleet:trainer` in Redis, renewed while it runs. Embedded,
it holds an exclusive lock on DATA/trainer.lock, which the kernel lets go when the process ends,
however it ends (kill -9 included). Either way a second trainer (another `fleet train`, a
restarted learner whose old trainer still runs) is refused instead of publishing the same version
numbers over the first one's; it waits a while first, for a holder that is on its way out.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import uuid
from pathlib import Path


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




class StoreLock:
    """The embedded store's trainer lock (module docstring)."""

    def __init__(self, data_dir: Path, wait_s: float = 0.0):
        self.path = Path(data_dir) / "trainer.lock"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "?"
                    os.close(self.fd)
                    raise LeaseHeld(f"another trainer (process {holder}) is training on {data_dir}; one trainer "
                                    "per store") from None
                time.sleep(0.5)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        os.close(self.fd)  # closing the descriptor lets the lock go

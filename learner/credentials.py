"""Credentials: per-robot and per-operator tokens, stored hashed, revocable.

`fleet token create --robot ID` (or `--operator NAME`) prints a new token once and keeps only
its SHA-256 in DATA/credentials.sqlite. Tokens are 32 random bytes, so a plain hash is enough
(nothing to brute-force); a revoked token is refused within `REFRESH_S` by every running server.

What a credential allows
    robot ID     register as ID, stream ID's episodes, hold ID's control stream, watch and
                 download policies. Nothing for another robot id, and not the dashboard.
    operator N   the dashboard (and so every command), as N; not the robots' RPCs.
Fleet-wide robot tokens (`--token-file`, one shared secret for any robot id) still work for
small setups and the demo; per-robot credentials are what a deployment should use.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

KINDS = ("robot", "operator")
REFRESH_S = 5.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS credentials (
    id TEXT PRIMARY KEY,              -- short public id, to list and revoke
    kind TEXT NOT NULL,               -- robot / operator
    subject TEXT NOT NULL,            -- the robot id or the operator name
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    revoked_at REAL
);
"""


@dataclass(frozen=True)
class Identity:
    kind: str        # "robot", "operator", or "fleet" (a fleet-wide robot token: any robot id)
    subject: str     # robot id or operator name ("" for a fleet token)
    credential: str  # the credential's id, or "token-file"

    def may_act_as_robot(self, robot_id: str) -> bool:
        return self.kind == "fleet" or (self.kind == "robot" and self.subject == robot_id)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class CredentialStore:
    """The credentials of one data directory. Writers: the CLI; readers: the servers."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / "credentials.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)
        self.path.chmod(0o600)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    def create(self, kind: str, subject: str) -> tuple[str, str]:
        """A new credential; returns (id, token). The token is shown once and not stored."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        if not subject:
            raise ValueError(f"a {kind} credential needs a {'robot id' if kind == 'robot' else 'name'}")
        token = f"fl{kind[0]}_{secrets.token_urlsafe(32)}"
        credential_id = secrets.token_hex(4)
        with self._connect() as db:
            db.execute("INSERT INTO credentials VALUES (?, ?, ?, ?, ?, NULL)",
                       (credential_id, kind, subject, token_hash(token), time.time()))
        return credential_id, token

    def revoke(self, credential_id: str) -> dict:
        with self._connect() as db:
            row = db.execute("SELECT * FROM credentials WHERE id=?", (credential_id,)).fetchone()
            if row is None:
                raise KeyError(f"no credential {credential_id!r}; `fleet token list` shows them")
            db.execute("UPDATE credentials SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                       (time.time(), credential_id))
        return dict(row)

    def list(self) -> list[dict]:
        with self._connect() as db:
            return [dict(r) for r in db.execute(
                "SELECT id, kind, subject, created_at, revoked_at FROM credentials ORDER BY created_at")]

    def active(self) -> dict[str, Identity]:
        """token hash -> identity, for every credential not revoked."""
        with self._connect() as db:
            rows = db.execute("SELECT id, kind, subject, token_sha256 FROM credentials WHERE revoked_at IS NULL")
            return {r["token_sha256"]: Identity(r["kind"], r["subject"], r["id"]) for r in rows}


class Authenticator:
    """Who a bearer token is: a stored credential (re-read every REFRESH_S, so revocations reach
    running servers) or a fleet-wide token from a token file."""

    def __init__(self, data_dir: Path | None, fleet_tokens: set[str] = frozenset(),
                 operator_tokens: dict[str, str] | None = None):
        self.store = CredentialStore(data_dir) if data_dir is not None else None
        self._fleet = {token_hash(t) for t in fleet_tokens}
        self._operators = {token_hash(t): name for t, name in (operator_tokens or {}).items()}
        self._known: dict[str, Identity] = {}
        self._read_at = 0.0
        self._refreshing = False
        self._lock = threading.Lock()

    def identify(self, token: str | None) -> Identity | None:
        if not token:
            return None
        digest = token_hash(token)
        for fleet in self._fleet:
            if hmac.compare_digest(digest, fleet):
                return Identity("fleet", "", "token-file")
        for known, name in self._operators.items():
            if hmac.compare_digest(digest, known):
                return Identity("operator", name, "operator-token-file")
        return self._stored().get(digest)

    def _stored(self) -> dict[str, Identity]:
        """The stored credentials. Read once in the caller; afterwards re-read on a thread when
        older than REFRESH_S, so the servers' event loops (every chunk is checked) never wait on
        SQLite."""
        if self.store is None:
            return {}
        with self._lock:
            if not self._read_at:
                self._refresh()
            elif time.monotonic() - self._read_at > REFRESH_S and not self._refreshing:
                self._refreshing = True
                threading.Thread(target=self._refresh, name="credentials-refresh", daemon=True).start()
            return self._known

    def _refresh(self) -> None:
        try:
            self._known = self.store.active()
            self._read_at = time.monotonic()
        finally:
            self._refreshing = False

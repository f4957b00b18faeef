"""The operator dashboard as a learner extension: `Learner(config, extensions=(OperatorDashboard(...),))`.

The learner does not import the dashboard. This extension reads what it shows from the learner it
is attached to (its control plane, publisher, registry, credentials and relay) and hears ingest
and robot messages through the learner's events.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from core.tls import warn_insecure
from dashboard.app import Dashboard, default_operator_token, read_operator_tokens
from dashboard.board import FleetBoard

log = logging.getLogger("fleetlearn.dashboard")


@dataclass
class DashboardConfig:
    port: int = 8080                        # 0: any free port
    host: str | None = None                 # default: the learner's gRPC host
    operator_token_file: Path | None = None  # 'name token' per line; default: one token kept in DATA/operator_token


class OperatorDashboard:
    def __init__(self, config: DashboardConfig):
        self.config = config
        self.dashboard: Dashboard | None = None
        self.url: str | None = None

    @property
    def port(self) -> int | None:
        return self.dashboard.port if self.dashboard is not None else None

    async def start(self, learner) -> None:
        c, lc = self.config, learner.config
        given = c.operator_token_file is not None
        tokens = read_operator_tokens(c.operator_token_file) if given else default_operator_token(lc.data_dir)
        board = FleetBoard(learner.control, lc.data_dir, learner.publisher)
        learner.events.subscribe(board)
        self.dashboard = Dashboard(board, learner.control, learner.registry, tokens, relay=learner.relay,
                                   auth=learner.auth)
        host = c.host or lc.host
        port = await self.dashboard.start(host, c.port, tls=lc.tls)
        if lc.tls is None:
            warn_insecure(f"the dashboard on {host}:{port} (HTTP)")
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        self.url = f"{'https' if lc.tls else 'http'}://{shown}:{port}/"
        if given:
            log.info("operator dashboard on %s (log in with your operator token)", self.url)
        else:  # like a notebook server: the one local token is in the link
            log.info("operator dashboard on %s?token=%s", self.url, next(iter(tokens)))

    async def stop(self) -> None:
        if self.dashboard is not None:
            await self.dashboard.stop()

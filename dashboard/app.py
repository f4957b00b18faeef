"""The operator dashboard: a FastAPI app served by the learner on its own port, on the learner's
event loop (it reads FleetControl directly and queues commands on the robots' control streams).

Pages and assets ship in dashboard/static; nothing is built. Live state reaches the page as
server-sent events (/api/events, two snapshots a second); camera pictures are PNGs fetched when a
robot's picture changes. Every route needs an operator token: a cookie set by logging in (the
URL the learner prints carries the token once), or an `Authorization: Bearer` header for scripts.
State-changing requests authenticated by cookie must also carry the header X-Fleet-Request,
which a page on another site cannot add: no cross-site request forgery.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import socket
from pathlib import Path

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from dashboard.board import HISTORY_EVERY_S, FleetBoard
from learner.control import BROADCASTS, ControlError, FleetControl, RobotNotConnected, apply_command

log = logging.getLogger("fleetlearn.dashboard")

STATIC = Path(__file__).parent / "static"
COOKIE = "fleet_operator"
EVENTS_EVERY_S = 0.5


def read_operator_tokens(path: Path) -> dict[str, str]:
    """token -> operator name. One operator per line: `name token`, or a bare token (named
    operator-N). Blank lines and '#' comments are ignored."""
    tokens: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) > 2:
            raise ValueError(f"{path}:{number}: expected 'name token' or 'token'")
        name, token = (parts[0], parts[1]) if len(parts) == 2 else (f"operator-{len(tokens) + 1}", parts[0])
        if len(token) < 16:
            raise ValueError(f"{path}:{number}: operator tokens must be at least 16 characters")
        tokens[token] = name
    if not tokens:
        raise ValueError(f"{path} holds no operator tokens")
    return tokens


def default_operator_token(data_dir: Path) -> dict[str, str]:
    """Without a token file, one token for "operator", made once and kept in DATA/operator_token."""
    path = Path(data_dir) / "operator_token"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24) + "\n")
        path.chmod(0o600)
    return {path.read_text().strip(): "operator"}


class Jog(BaseModel):
    dx: float = Field(0.0, ge=-1.0, le=1.0)
    dy: float = Field(0.0, ge=-1.0, le=1.0)
    dz: float = Field(0.0, ge=-1.0, le=1.0)
    gripper: float | None = Field(None, ge=-1.0, le=1.0)
    duration_s: float = Field(0.3, gt=0.0, le=2.0)


class Answer(BaseModel):
    answer: str


class Login(BaseModel):
    token: str


class Dashboard:
    def __init__(self, board: FleetBoard, control: FleetControl, registry, tokens: dict[str, str], relay=None,
                 auth=None):
        self.auth = auth  # stored operator credentials (learner/credentials.py), besides `tokens`
        self.https = False  # set when served with TLS: the login cookie is then Secure
        self.board = board
        self.control = control
        self.relay = relay  # scale-out: commands for robots held by other replicas go through it
        self.registry = registry
        self.tokens = tokens
        self.clients = 0
        self.closing = False  # set at shutdown: open event streams end
        self.app = self._build()
        self.server: uvicorn.Server | None = None
        self._serving: asyncio.Task | None = None
        self._refresher: asyncio.Task | None = None
        self.port: int | None = None

    # -- auth ----------------------------------------------------------------------------------

    def operator_for(self, token: str | None) -> str | None:
        if not token:
            return None
        for known, name in self.tokens.items():
            if hmac.compare_digest(token.encode(), known.encode()):
                return name
        identity = self.auth.identify(token) if self.auth is not None else None
        return identity.subject if identity is not None and identity.kind == "operator" else None

    def _authenticate(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer "):
            operator = self.operator_for(header[len("Bearer "):])
        else:
            operator = self.operator_for(request.cookies.get(COOKIE))
            if operator and request.method != "GET" and "x-fleet-request" not in request.headers:
                raise HTTPException(403, "cookie-authenticated commands need the X-Fleet-Request header")
        if operator is None:
            raise HTTPException(401, "an operator token is required: open the URL the learner printed, or log in")
        return operator

    # -- the app -------------------------------------------------------------------------------

    def _build(self) -> FastAPI:
        app = FastAPI(title="fleetlearn dashboard", docs_url=None, redoc_url=None, openapi_url=None)
        auth = Depends(self._authenticate)
        board, control = self.board, self.control

        @app.exception_handler(RequestValidationError)
        async def invalid(request: Request, exc: RequestValidationError):
            """422 naming the fields, without echoing the input (which may not even be valid JSON:
            a NaN or an Infinity made the default handler fail with a 500)."""
            return JSONResponse(status_code=422, content={"detail": [
                {"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in exc.errors()]})

        @app.get("/", response_class=HTMLResponse)
        async def index(request: Request, token: str | None = None):
            if token is not None:  # the printed URL: keep the token in a cookie, drop it from the address bar
                if self.operator_for(token) is None:
                    return FileResponse(STATIC / "login.html", status_code=401)
                response = RedirectResponse("/", status_code=303)
                self._set_cookie(response, token)
                return response
            if self.operator_for(request.cookies.get(COOKIE)) is None:
                return FileResponse(STATIC / "login.html", status_code=401)
            return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

        @app.post("/api/login")
        async def login(body: Login):
            operator = self.operator_for(body.token)
            if operator is None:
                log.warning("dashboard login refused: unknown token")
                raise HTTPException(401, "unknown operator token")
            response = JSONResponse({"operator": operator})
            self._set_cookie(response, body.token)
            return response

        @app.get("/static/{name}")
        async def static(name: str, operator: str = auth):
            path = STATIC / name
            if name not in {"app.js", "style.css"} or not path.exists():
                raise HTTPException(404, f"no asset {name!r}")
            return FileResponse(path, headers={"Cache-Control": "no-store"})

        @app.get("/api/me")
        async def me(operator: str = auth):
            return {"operator": operator}

        @app.get("/api/state")
        async def state(operator: str = auth):
            return board.snapshot()

        @app.get("/api/events")
        async def events(request: Request, operator: str = auth):
            async def stream():
                self.clients += 1
                try:
                    yield f"event: hello\ndata: {json.dumps({'operator': operator})}\n\n"
                    sent: dict[str, int] = {}  # the pictures this page has
                    while not self.closing and not await request.is_disconnected():
                        snapshot = board.snapshot()
                        snapshot["pictures"] = board.pictures_since(sent)
                        yield f"data: {json.dumps(snapshot)}\n\n"
                        await asyncio.sleep(EVENTS_EVERY_S)
                finally:
                    self.clients -= 1

            return StreamingResponse(stream(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

        @app.get("/api/robots/{robot_id}/preview.png")
        async def preview(robot_id: str, operator: str = auth):
            found = await asyncio.to_thread(board.preview_png, robot_id)
            if found is None:
                raise HTTPException(404, f"no picture from {robot_id!r} yet")
            seq, png = found
            return Response(png, media_type="image/png", headers={"Cache-Control": "no-store", "X-Preview-Seq": str(seq)})

        @app.post("/api/robots/{robot_id}/take_over")
        async def take_over(robot_id: str, operator: str = auth, local: bool = False):
            """`local`: the robot's own teleop device drives (someone at the robot), not the page's jogs."""
            return await self._command(operator, "take over at the robot" if local else "take over", robot_id,
                                       "take_over", {"remote": not local})

        @app.post("/api/robots/{robot_id}/hand_back")
        async def hand_back(robot_id: str, operator: str = auth):
            return await self._command(operator, "hand back", robot_id, "hand_back")

        @app.post("/api/robots/{robot_id}/answer")
        async def answer(robot_id: str, body: Answer, operator: str = auth):
            return await self._command(operator, f"answer help: {body.answer.replace('_', ' ')}", robot_id,
                                       "answer", {"answer": body.answer})

        @app.post("/api/robots/{robot_id}/jog")
        async def jog(robot_id: str, body: Jog, operator: str = auth):
            return await self._command(
                operator, "jog", robot_id, "jog", body.model_dump(),
                detail=f"v=({body.dx:+.2f}, {body.dy:+.2f}, {body.dz:+.2f}) for {body.duration_s:.2f} s"
                       + ("" if body.gripper is None else f", gripper {body.gripper:+.1f}"), visible=False)

        @app.post("/api/robots/{robot_id}/{action}")
        async def broadcast(robot_id: str, action: str, operator: str = auth):
            if action not in BROADCASTS:
                raise HTTPException(404, f"no robot command {action!r}")
            if robot_id != "all":
                return await self._command(operator, action, robot_id, action)
            # Every robot at once; one that cannot be reached (its replica just died) stops no other.
            targets = set(control.sessions)
            if self.relay is not None:
                targets |= set(await self.relay.connected_robots())
            outcomes = await asyncio.gather(*(self._command(operator, action, target, action)
                                              for target in sorted(targets)), return_exceptions=True)
            refused = {target: o.detail for target, o in zip(sorted(targets), outcomes) if isinstance(o, HTTPException)}
            for outcome in outcomes:
                if isinstance(outcome, BaseException) and not isinstance(outcome, HTTPException):
                    raise outcome
            return {"commands": [c for o in outcomes if isinstance(o, dict) for c in o["commands"]], "refused": refused}

        @app.get("/api/learning")
        async def learning(operator: str = auth):
            return await asyncio.to_thread(board.learning, len(control.sessions), len(control.operators),
                                           *board.fleet_versions())

        @app.post("/api/versions/{version}/publish")
        async def publish(version: int, operator: str = auth):
            if self.registry is None:
                raise HTTPException(503, "this learner has no version registry")
            if version not in await asyncio.to_thread(self.registry.all):
                raise HTTPException(404, f"no policy version {version}")
            note = f"published again by {operator} from the dashboard"
            await asyncio.to_thread(self.registry.publish, version, note, True)
            board.note(operator, f"publish version {version} again", note)
            log.info("%s published version %d again (rollback)", operator, version)
            return {"version": version, "note": note}

        return app

    def _set_cookie(self, response: Response, token: str) -> None:
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", max_age=7 * 24 * 3600,
                            secure=self.https)

    async def _command(self, operator: str, action: str, robot_id: str, op: str, args: dict | None = None,
                       detail: str = "", visible: bool = True):
        """Carries out a person's command: here, or through the relay on the replica holding the robot."""
        args = {**(args or {}), "operator": operator}
        try:
            if self.relay is not None:
                commands = await self.relay.issue(op, robot_id, args)
            else:
                commands = apply_command(self.control, op, robot_id, args)
        except ControlError as exc:
            self.board.record_refusal(operator, action, robot_id, str(exc))
            raise HTTPException(404 if isinstance(exc, RobotNotConnected) else 409, str(exc)) from exc
        return {"commands": self.board.record(operator, action, commands, detail, visible=visible)}

    # -- serving -------------------------------------------------------------------------------

    async def start(self, host: str, port: int, tls=None) -> int:
        """Serves on host:port (0: a free port); HTTPS with `tls` (core.tls.ServerTLS)."""
        self.https = tls is not None
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise RuntimeError(f"dashboard cannot bind {host}:{port} ({exc}); choose another --dashboard-port") from exc
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=1, ssl_certfile=str(tls.cert) if tls else None,
                                ssl_keyfile=str(tls.key) if tls else None)
        self.server = _EmbeddedServer(config)
        self._serving = asyncio.create_task(self.server.serve(sockets=[sock]))
        self._refresher = asyncio.create_task(self._refresh_history())
        while not self.server.started:
            if self._serving.done():
                self._serving.result()  # raises what stopped it
            await asyncio.sleep(0.02)
        return self.port

    async def _refresh_history(self) -> None:
        """The SQLite-backed part of the board, refreshed while a page is open."""
        while True:
            if self.clients > 0 or self.board.history_age_s > 30:
                try:
                    await asyncio.to_thread(self.board.refresh_history)
                except Exception as exc:  # a locked or missing index: keep the last figures
                    log.warning("dashboard history refresh failed: %s", exc)
            await asyncio.sleep(HISTORY_EVERY_S)

    async def stop(self) -> None:
        self.closing = True
        await asyncio.sleep(EVENTS_EVERY_S + 0.1)  # open event streams notice and end
        if self._refresher is not None:
            self._refresher.cancel()
        if self.server is not None:
            self.server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._serving, timeout=5)
        await asyncio.to_thread(self.board.close)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn on the learner's loop: the learner, not uvicorn, handles SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield

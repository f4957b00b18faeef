"""What every RPC passes before a servicer method runs: the bearer token (a robot credential, or
a fleet-wide token from --token-file), and a request that decodes at all."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError

from learner.credentials import Authenticator

log = logging.getLogger("fleetlearn.learner")


def read_tokens(path: Path) -> set[str]:
    """One token per line; blank lines and '#' comments ignored."""
    tokens = {line.strip() for line in Path(path).read_text().splitlines()}
    tokens = {t for t in tokens if t and not t.startswith("#")}
    if not tokens:
        raise ValueError(f"{path} holds no tokens")
    return tokens


def bearer(metadata) -> str | None:
    header = dict(metadata or ()).get("authorization")
    return header[len("Bearer "):] if header and header.startswith("Bearer ") else None


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Rejects every call whose `authorization` metadata is not `Bearer <a robot's token>`: a
    robot credential or a fleet token. (Which robot a credential may act as is checked by the
    servicer, which sees the robot id.)"""

    def __init__(self, auth: Authenticator):
        self.auth = auth

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        identity = self.auth.identify(bearer(details.invocation_metadata))
        if handler is None or (identity is not None and identity.kind in ("robot", "fleet")):
            return handler
        message = ("operator credentials are for the dashboard, not the robots' RPCs" if identity is not None else
                   "missing, unknown or revoked bearer token: give the robot its token (fleet token create --robot ID)")

        async def deny(request, context):
            log.warning("rejected %s: bad token from %s", details.method, context.peer())
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        kinds = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }
        return kinds[(handler.request_streaming, handler.response_streaming)](deny)


class _Malformed:
    """A request whose bytes did not parse: carried to the handler, which refuses it."""

    def __init__(self, error: str):
        self.error = error


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):
    """Bytes that are not the method's request message get INVALID_ARGUMENT naming the message,
    instead of gRPC's INTERNAL for a deserializer that raised. (The streaming methods read their
    messages themselves and refuse malformed ones there.)"""

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or handler.request_streaming:
            return handler
        parse = handler.request_deserializer
        method = details.method.rsplit("/", 1)[-1]

        def tolerant(data: bytes):
            try:
                return parse(data)
            except DecodeError as exc:
                return _Malformed(f"malformed {method} request: {exc}")

        if handler.response_streaming:
            async def streaming(request, context):
                if isinstance(request, _Malformed):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.error)
                async for response in handler.unary_stream(request, context):
                    yield response

            return grpc.unary_stream_rpc_method_handler(streaming, tolerant, handler.response_serializer)

        async def unary(request, context):
            if isinstance(request, _Malformed):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.error)
            return await handler.unary_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary, tolerant, handler.response_serializer)

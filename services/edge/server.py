"""The edge process: WebSocket protocol at /v1/stream (and OpenAI Realtime at /v1/realtime),
health, metrics and the web page."""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import prometheus_client
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from services.edge.access import CLOSE_UNAUTHORIZED, Access, refuse_rate_limited
from services.edge.auth import AuthConfig
from services.edge.auth_config import load_auth_config
from services.edge.capabilities import CapabilityCache
from services.edge.context import EdgeContext
from services.edge.ratelimit_redis import open_limiter
from services.edge.realtime_api import RealtimeTranslator
from services.edge.realtime_socket import RealtimeSocket
from services.edge.session import CLOSE_DRAINING, RENEW_S, Session, release_session
from shared import bus
from shared.config import Settings
from shared.process import wait_for_signal
from shared.state import open_store
from shared.subjects import Subjects

log = logging.getLogger("parley.edge")

WEB_ROOT = Path(__file__).parent / "web"
STREAM_PATH = "/v1/stream"
REALTIME_PATH = "/v1/realtime"  # OpenAI Realtime API (GA) clients: base URL http://<edge>/v1
MAX_WS_FRAME_BYTES = 1 << 20
DRAIN_TIMEOUT_S = 10.0  # beyond our own limits, so oversized frames get a polite error


def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store")])
    return Response(status.value, status.phrase, headers, body)


def _static(path: str) -> Response | None:
    name = "index.html" if path in ("/", "") else path.lstrip("/")
    file = (WEB_ROOT / name).resolve()
    if WEB_ROOT.resolve() not in file.parents or not file.is_file():
        return None
    content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type.endswith("javascript"):
        content_type += "; charset=utf-8"
    return _response(HTTPStatus.OK, file.read_bytes(), content_type)


def _unauthorized() -> Response:
    response = _response(HTTPStatus.UNAUTHORIZED, b"unauthorized\n", "text/plain")
    response.headers["WWW-Authenticate"] = 'Bearer realm="parley"'
    return response


class Edge:
    def __init__(self, ctx: EdgeContext) -> None:
        self.ctx = ctx

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path in (STREAM_PATH, REALTIME_PATH):
            if not self.ctx.access.authenticate(connection, request.headers, request.path):
                return _unauthorized()
            return None  # go on with the WebSocket handshake
        if path == "/healthz":
            return _response(HTTPStatus.OK, b"ok\n", "text/plain")
        if path == "/readyz":
            return await self._readyz()
        if path == "/metrics":
            return _response(HTTPStatus.OK, prometheus_client.generate_latest(), prometheus_client.CONTENT_TYPE_LATEST)
        return _static(path) or _response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

    async def _readyz(self) -> Response:
        if not self.ctx.nc.is_connected:
            return _response(HTTPStatus.SERVICE_UNAVAILABLE, b"not connected to NATS\n", "text/plain")
        caps = await self.ctx.capabilities.get(fresh=True)
        if caps.missing_kinds:
            body = f"no worker answers: {', '.join(caps.missing_kinds)}\n".encode()
            return _response(HTTPStatus.SERVICE_UNAVAILABLE, body, "text/plain")
        return _response(HTTPStatus.OK, b"ready\n", "text/plain")

    async def handle(self, ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path)
        socket = ws
        if url.path == REALTIME_PATH:  # the same Session, through a Realtime translator
            model = parse_qs(url.query).get("model", ["gpt-realtime"])[0]
            socket = RealtimeSocket(ws, RealtimeTranslator(model))
        principal = self.ctx.access.principal_of(ws)
        if principal is None:  # defence in depth: never a session without a checked principal
            await ws.close(CLOSE_UNAUTHORIZED, "unauthorized")
            return
        refusal = await self.ctx.access.admit_connection(principal)
        if refusal:
            await refuse_rate_limited(socket, refusal)
            return
        await Session(self.ctx, socket, principal).run()


async def main(settings: Settings) -> None:
    auth_config = _auth_config()
    subjects = Subjects(settings.prefix)
    nc = await bus.connect(settings.nats_url, "parley-edge")
    js = nc.jetstream()
    await bus.ensure_streams(js, subjects, settings.resume_window_s, settings.stream_replicas)
    store = open_store(settings.redis_url, settings.prefix, member_ttl_s=settings.resume_window_s + 2 * RENEW_S)
    ctx = EdgeContext(settings, subjects, nc, js, store, CapabilityCache(nc, subjects))
    ctx.access = Access(auth_config, open_limiter(settings.redis_url, settings.prefix), settings.prefix)
    ctx.on_expire = lambda record: release_session(ctx, record)
    edge = Edge(ctx)
    for level, line in ctx.access.describe(settings.host):
        log.log(level, line)
    async with serve(
        edge.handle, settings.host, settings.port,
        process_request=edge.process_request, max_size=MAX_WS_FRAME_BYTES,
        ping_interval=20, ping_timeout=20,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        log.info("edge listening on http://%s:%d (protocol at ws://%s:%d%s)",
                 settings.host, port, settings.host, port, STREAM_PATH)
        await wait_for_signal()
        log.info("edge draining: closing %d sessions", len(ctx.live))
        # One step: stop listening, refuse handshakes in progress (503), and close every
        # open connection with 4503 — a session being started included, not only live ones.
        server.close(code=CLOSE_DRAINING, reason="edge draining; resume elsewhere")
        try:
            await asyncio.wait_for(server.wait_closed(), DRAIN_TIMEOUT_S)
        except (asyncio.TimeoutError, TimeoutError):
            log.warning("connections still open after %.0f s; exiting anyway", DRAIN_TIMEOUT_S)
    await nc.drain()


def _auth_config() -> AuthConfig:
    """`[auth]` and `[limits]`; a mistake in them stops the edge before it listens."""
    try:
        return load_auth_config()
    except (ValueError, OSError) as exc:
        log.error("auth or limits configuration refused: %s", exc)
        raise SystemExit(2) from None

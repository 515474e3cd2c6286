"""One upstream OpenAI Realtime session that outlives expiry and dropped sockets.

`RealtimeUpstream` is the only place that touches the vendor's socket. Every client event
is first recorded in a `Conversation`, then sent, under one lock; when the session expires
(an `error` with code `session_expired`) or the socket dies, the reader opens a new
session, sends `session.update` and replays the conversation under that same lock, so
nothing sent meanwhile is lost or doubled. The owner sees a `Recreated` event.

Failures are the project's errors (shared/errors.py): 401/403 → ProviderAuthError,
no answer within `timeout_s` → ProviderTimeout, unreachable → ProviderUnavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from services.tools.realtime import events as ev
from services.tools.realtime.conversation import Conversation
from shared.errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderQuotaError,
    ProviderTimeout,
    ProviderUnavailable,
)
from shared.http_errors import status_error
from shared.secrets import Secret

log = logging.getLogger("parley.tools.realtime")

DEFAULT_MODEL = "gpt-realtime"
MAX_EVENT_BYTES = 16 * 1024 * 1024  # a long audio delta or a replayed history
RECREATE_ATTEMPTS = 3
RECREATE_BACKOFF_S = 0.25
MAX_RECREATIONS = 5  # within RECREATION_WINDOW_S: a session that keeps dying is given up
RECREATION_WINDOW_S = 60.0


class _NoDebug(logging.LoggerAdapter):
    """websockets logs handshake headers (the key among them) at DEBUG: never let it."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


_WS_LOG = _NoDebug(logging.getLogger("parley.tools.realtime.ws"), {})


def realtime_url(base_url: str, model: str) -> str:
    """`http(s)://host/v1` (OPENAI_BASE_URL's form) → `ws(s)://host/v1/realtime?model=…`."""
    parts = urlsplit(base_url.rstrip("/"))
    schemes = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
    if parts.scheme not in schemes or not parts.netloc:
        raise ValueError(f"not an http(s) base URL: {base_url!r}")
    return urlunsplit((schemes[parts.scheme], parts.netloc, parts.path + "/realtime",
                       urlencode({"model": model}), ""))


@dataclass(frozen=True, slots=True)
class SessionConfig:
    instructions: str
    tools: tuple[dict[str, Any], ...] = ()  # GA function tools (events.tool_definition)
    language: str | None = None
    voice: str | None = None

    def event(self) -> dict[str, Any]:
        return ev.session_update(self.instructions, list(self.tools), language=self.language,
                                 voice=self.voice)


@dataclass(frozen=True, slots=True)
class Recreated:
    """The upstream session was replaced ("expired" or "dropped"); the reply in progress,
    if any, died with it and has been asked for again."""

    reason: str
    lost_response_id: str | None = None


def _error_for(error: ev.ServerError) -> ProviderError:
    """An `error` event that ends the connection attempt, as one of our errors."""
    if error.code in ("invalid_api_key", "unauthorized"):
        return ProviderAuthError(f"openai realtime refused the key ({error.code})")
    if error.code in ("rate_limit_exceeded", "insufficient_quota"):
        return ProviderQuotaError(f"openai realtime: {error.code}")
    return ProviderUnavailable(f"openai realtime error {error.code or error.kind}")


@dataclass
class RealtimeUpstream:
    key: Secret
    base_url: str
    config: SessionConfig
    model: str = DEFAULT_MODEL
    timeout_s: float = 10.0
    conversation: Conversation = field(default_factory=Conversation)
    recreations: int = 0
    _ws: ClientConnection | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _closed: bool = False
    _recent: deque = field(default_factory=deque)  # monotonic times of recent re-creations

    @property
    def url(self) -> str:
        return realtime_url(self.base_url, self.model)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._lock:
            await self._open()

    async def close(self) -> None:
        self._closed = True
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def _open(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                ws = await connect(self.url, open_timeout=None, max_size=MAX_EVENT_BYTES,
                                   additional_headers={"Authorization": f"Bearer {self.key.reveal()}"},
                                   logger=_WS_LOG)
                try:
                    await self._await_created(ws)
                    await ws.send(json.dumps(self.config.event()))
                except BaseException:
                    await ws.close()
                    raise
        except InvalidStatus as exc:
            raise status_error("openai realtime", exc.response.status_code) from exc
        except TimeoutError as exc:
            raise ProviderTimeout(f"openai realtime did not open a session in {self.timeout_s:g} s") from exc
        except (OSError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
            raise ProviderUnavailable(f"openai realtime unreachable ({type(exc).__name__})") from exc
        self._ws = ws

    @staticmethod
    async def _await_created(ws: ClientConnection) -> None:
        event = ev.parse_server_event(json.loads(await ws.recv()))
        if isinstance(event, ev.ServerError):
            raise _error_for(event)
        if not isinstance(event, ev.SessionCreated):
            raise ProviderBadResponse("openai realtime did not open with session.created")

    # -- client events (recorded, then sent) -----------------------------------------------

    async def _send(self, events: list[dict[str, Any]], record: Callable[[], None] | None = None) -> None:
        async with self._lock:
            if self._closed:
                return
            if record is not None:
                record()
            if self._ws is None:
                return  # being re-created: the replay carries what was just recorded
            try:
                for event in events:
                    await self._ws.send(json.dumps(event))
            except ConnectionClosed:
                pass  # the reader sees it too, re-creates the session and replays the record

    async def append_audio(self, pcm_24k: bytes) -> None:
        await self._send([ev.append_audio(pcm_24k)], lambda: self.conversation.appended(pcm_24k))

    async def commit_and_respond(self) -> None:
        def record() -> None:
            self.conversation.committed()
            self.conversation.response_requested()
        await self._send([ev.commit_audio(), ev.response_create()], record)

    async def clear_audio(self) -> None:
        await self._send([ev.clear_audio()], self.conversation.cleared)

    async def tool_output(self, call_id: str, output: str) -> None:
        await self._send([ev.function_call_output(call_id, output)],
                         lambda: self.conversation.tool_output(call_id, output))

    async def respond(self) -> None:
        await self._send([ev.response_create()], self.conversation.response_requested)

    async def cancel(self, response_id: str | None = None) -> None:
        await self._send([ev.response_cancel(response_id)], self.conversation.response_cancelled)

    async def update(self, config: SessionConfig) -> None:
        def record() -> None:
            self.config = config
        await self._send([config.event()], record)

    # -- server events ---------------------------------------------------------------------

    async def events(self) -> AsyncIterator[ev.ServerEvent | Recreated]:
        """Domain events until `close()`; re-creates the session underneath when it ends."""
        while not self._closed:
            ws = self._ws
            try:
                raw = await ws.recv()
            except ConnectionClosed:
                if self._closed:
                    return
                yield await self._recreate("dropped")
                continue
            try:
                event = ev.parse_server_event(json.loads(raw))
            except (ValueError, ProviderBadResponse) as exc:
                log.warning("skipping a malformed realtime event: %s", exc)
                continue
            if isinstance(event, ev.ServerError) and event.code == ev.SESSION_EXPIRED:
                yield await self._recreate("expired")
                continue
            self.conversation.observe(event)
            if event is not None:
                yield event

    async def _recreate(self, reason: str) -> Recreated:
        self._note_recreation()
        async with self._lock:
            lost = self.conversation.response_id
            old, self._ws = self._ws, None
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.close()
            await self._open_with_retries()
            with contextlib.suppress(ConnectionClosed):  # dying again: the next read notices
                for event in self.conversation.replay():
                    await self._ws.send(json.dumps(event))
            self.recreations += 1
        log.info("realtime session re-created (%s); %d history items replayed", reason,
                 len(self.conversation.items))
        return Recreated(reason, lost)

    def _note_recreation(self) -> None:
        now = time.monotonic()
        self._recent.append(now)
        while self._recent and now - self._recent[0] > RECREATION_WINDOW_S:
            self._recent.popleft()
        if len(self._recent) > MAX_RECREATIONS:
            raise ProviderUnavailable(f"openai realtime session ended {len(self._recent)} times "
                                      f"in {RECREATION_WINDOW_S:g} s")

    async def _open_with_retries(self) -> None:
        for attempt in range(RECREATE_ATTEMPTS):
            try:
                return await self._open()
            except ProviderError as exc:
                if not exc.retryable or attempt == RECREATE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(RECREATE_BACKOFF_S * 2 ** attempt)

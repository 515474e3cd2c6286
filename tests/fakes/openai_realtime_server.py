"""A local OpenAI Realtime (GA) WebSocket server for contract and integration tests.

    with FakeRealtime(api_key="sk-test") as fake:      # fake.base_url: http://127.0.0.1:<port>/v1
        fake.knobs.tool, fake.knobs.tool_args = "get_weather", {"city": "Paris"}
        ...
        fake.connections[0].received                   # every client event, in order

`GET /v1/realtime?model=...` with `Authorization: Bearer <key>` (else HTTP 401 with the
vendor's error body). `session.created` opens every connection. Handled: `session.update`,
`input_audio_buffer.append/commit/clear`, `conversation.item.create`, `response.create`,
`response.cancel`; anything else gets an `error` event, as the real service answers.

Scripted replies, decided when a response starts:
- the last item is a `function_call_output` → say "The answer is <output>";
- else, if `knobs.tool` is among the session's tools and the last item is a user message
  → call it with `knobs.tool_args`;
- else say `knobs.reply`.
Speech is a 440 Hz tone of `knobs.reply_audio_s` at 24 kHz in 100 ms deltas, one word of
the transcript with each delta, `knobs.audio_delay_s` apart (so a cancel can land mid-way).

Faults, on the connections numbered in `knobs.fault_connections` (1-based): `expire_after_s`
(an `error` with code `session_expired`, then close 1001, as OpenAI ends a session at its
maximum duration) and `drop_after_events` (the TCP connection is cut after that many
server events). `latency_s` delays every response.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from shared.audio import tone

RATE_HZ = 24000
DELTA_S = 0.1
MIN_COMMIT_BYTES = RATE_HZ * 2 // 10  # 100 ms: the real service refuses a shorter commit


@dataclass
class Knobs:
    transcripts: list[str] = field(default_factory=lambda: ["What is the weather in Paris?"])
    tool: str | None = None
    tool_args: dict = field(default_factory=dict)
    tool_unlisted: bool = False  # call `tool` even when the session has none of that name
    reply: str = "Hello from the fake."
    reply_audio_s: float = 0.3
    audio_delay_s: float = 0.0
    latency_s: float = 0.0
    cancel_lag_s: float = 0.0  # audio already in flight keeps coming this long after a cancel
    expire_after_s: float | None = None
    drop_after_events: int | None = None
    fault_connections: tuple[int, ...] = (1,)


@dataclass
class Connection:
    """One upstream session as the fake saw it."""

    number: int
    model: str
    received: list[dict] = field(default_factory=list)  # client events, in order
    sent: list[dict] = field(default_factory=list)
    timeline: list[tuple[str, str]] = field(default_factory=list)  # ("in"|"out", type), in order
    items: list[dict] = field(default_factory=list)  # the conversation, as the model sees it
    tools: list[dict] = field(default_factory=list)
    instructions: str = ""
    ended: threading.Event = field(default_factory=threading.Event)

    def of_type(self, kind: str) -> list[dict]:
        return [event for event in self.received if event.get("type") == kind]


class FakeRealtime:
    def __init__(self, api_key: str = "sk-test") -> None:
        self.api_key = api_key
        self.knobs = Knobs()
        self.connections: list[Connection] = []
        self._live: dict[int, _Session] = {}
        self.port = 0
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeRealtime:
        ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(ready),),
                                        name="fake-openai-realtime", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake Realtime server did not start")
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
            self._thread = None

    __enter__ = start

    def __exit__(self, *exc) -> None:
        self.stop()

    def expire(self, number: int) -> None:
        """End connection `number` now, as OpenAI ends a session at its maximum duration
        (without waiting: the close handshake needs the client's loop, maybe the caller's)."""
        asyncio.run_coroutine_threadsafe(self._live[number].expire(0.0), self._loop)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}"

    async def _serve(self, ready: threading.Event) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with serve(self._session, "127.0.0.1", 0, process_request=self._handshake,
                         compression=None, max_size=None,
                         logger=logging.getLogger("fake.openai_realtime")) as server:
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await self._stop.wait()

    def _handshake(self, connection: ServerConnection, request):
        url = urlsplit(request.path)
        if url.path != "/v1/realtime" or not dict(parse_qsl(url.query)).get("model"):
            return connection.respond(404, "Not Found\n")
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            response = connection.respond(401, json.dumps({"error": {
                "type": "invalid_request_error", "code": "invalid_api_key",
                "message": "Incorrect API key provided.", "param": None}}))
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
            return response
        return None

    async def _session(self, ws: ServerConnection) -> None:
        model = dict(parse_qsl(urlsplit(ws.request.path).query))["model"]
        conn = Connection(len(self.connections) + 1, model)
        self.connections.append(conn)
        self._live[conn.number] = _Session(self, ws, conn)
        try:
            await self._live[conn.number].run()
        finally:
            del self._live[conn.number]


class _Session:
    """One connection's state machine: input buffer, conversation, the response in flight."""

    def __init__(self, fake: FakeRealtime, ws: ServerConnection, conn: Connection) -> None:
        self.fake, self.ws, self.conn, self.knobs = fake, ws, conn, fake.knobs
        self.faulty = conn.number in self.knobs.fault_connections
        self.buffer = bytearray()
        self.response: asyncio.Task | None = None
        self.turn = 0

    async def run(self) -> None:
        timer = None
        if self.faulty and self.knobs.expire_after_s is not None:
            timer = asyncio.create_task(self.expire(self.knobs.expire_after_s))
        try:
            await self.send({"type": "session.created", "session": {
                "id": self.fake.new_id("sess"), "object": "realtime.session", "type": "realtime",
                "model": self.conn.model}})
            async for raw in self.ws:
                event = json.loads(raw)
                self.conn.received.append(event)
                self.conn.timeline.append(("in", event.get("type")))
                await self.handle(event)
        except ConnectionClosed:
            pass
        finally:
            for task in (timer, self.response):
                if task:
                    task.cancel()
            self.conn.ended.set()

    async def send(self, event: dict) -> None:
        event = {"event_id": self.fake.new_id("event"), **event}
        self.conn.sent.append(event)
        self.conn.timeline.append(("out", event["type"]))
        await self.ws.send(json.dumps(event))
        limit = self.knobs.drop_after_events
        if self.faulty and limit is not None and len(self.conn.sent) >= limit:
            self.ws.transport.abort()  # no close frame: the client sees the socket die
            raise ConnectionClosed(None, None)

    async def expire(self, after_s: float) -> None:
        await asyncio.sleep(after_s)
        with contextlib.suppress(ConnectionClosed):
            await self.send({"type": "error", "error": {
                "type": "invalid_request_error", "code": "session_expired",
                "message": "Your session hit the maximum duration of 60 minutes.",
                "param": None, "event_id": None}})
            await self.ws.close(1001, "Your session hit the maximum duration of 60 minutes.")

    async def error(self, code: str, message: str, event: dict) -> None:
        await self.send({"type": "error", "error": {
            "type": "invalid_request_error", "code": code, "message": message, "param": None,
            "event_id": event.get("event_id")}})

    async def handle(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "session.update":
            session = event.get("session") or {}
            self.conn.tools = session.get("tools", self.conn.tools)
            self.conn.instructions = session.get("instructions", self.conn.instructions)
            await self.send({"type": "session.updated", "session": {
                "type": "realtime", "tools": self.conn.tools,
                "instructions": self.conn.instructions}})
        elif kind == "input_audio_buffer.append":
            self.buffer += base64.b64decode(event["audio"])
        elif kind == "input_audio_buffer.clear":
            self.buffer.clear()
            await self.send({"type": "input_audio_buffer.cleared"})
        elif kind == "input_audio_buffer.commit":
            await self.commit(event)
        elif kind == "conversation.item.create":
            await self.add_item({"id": self.fake.new_id("item"), **event["item"]})
        elif kind == "response.create":
            if self.response and not self.response.done():
                return await self.error("conversation_already_has_active_response",
                                        "Conversation already has an active response", event)
            self.response = asyncio.create_task(self.respond())
        elif kind == "response.cancel":
            await self.cancel(event)
        else:
            await self.error("unknown_event", f"Unknown event type {kind!r}", event)

    async def add_item(self, item: dict) -> None:
        previous = self.conn.items[-1]["id"] if self.conn.items else None
        self.conn.items.append(item)
        for kind in ("conversation.item.added", "conversation.item.done"):
            await self.send({"type": kind, "previous_item_id": previous, "item": item})

    async def commit(self, event: dict) -> None:
        if len(self.buffer) < MIN_COMMIT_BYTES:
            return await self.error("input_audio_buffer_commit_empty",
                                    "Expected at least 100ms of audio in the buffer.", event)
        item_id, self.buffer = self.fake.new_id("item"), bytearray()
        transcript = self.knobs.transcripts[self.turn % len(self.knobs.transcripts)]
        self.turn += 1
        await self.send({"type": "input_audio_buffer.committed", "item_id": item_id})
        await self.add_item({"id": item_id, "type": "message", "role": "user", "content": [
            {"type": "input_audio", "transcript": None}]})
        await self.send({"type": "conversation.item.input_audio_transcription.completed",
                         "item_id": item_id, "content_index": 0, "transcript": transcript,
                         "usage": {"type": "duration", "seconds": 1}})

    async def cancel(self, event: dict) -> None:
        if not self.response or self.response.done():
            return await self.error("response_cancel_not_active",
                                    "Cancellation failed: no active response found", event)
        if self.knobs.cancel_lag_s:
            await asyncio.sleep(self.knobs.cancel_lag_s)
        self.response.cancel()  # done before the next event is read, as the service does
        with contextlib.suppress(asyncio.CancelledError):
            await self.response

    def _plan(self) -> tuple[str, str]:
        """("call", name) or ("say", text): the script of the response starting now."""
        last = self.conn.items[-1] if self.conn.items else {}
        if last.get("type") == "function_call_output":
            return "say", f"The answer is {last.get('output', '')}"
        names = {tool.get("name") for tool in self.conn.tools}
        listed = self.knobs.tool in names or (self.knobs.tool and self.knobs.tool_unlisted)
        if listed and last.get("role") == "user":
            return "call", self.knobs.tool
        return "say", self.knobs.reply

    async def respond(self) -> None:
        rid = self.fake.new_id("resp")
        response = {"object": "realtime.response", "id": rid, "status": "in_progress",
                    "output": []}
        await self.send({"type": "response.created", "response": response})
        status = "completed"
        try:
            if self.knobs.latency_s:
                await asyncio.sleep(self.knobs.latency_s)
            action, what = self._plan()
            item = await (self.call(rid, what) if action == "call" else self.say(rid, what))
            response["output"].append(item)
        except asyncio.CancelledError:
            status = "cancelled"
        except ConnectionClosed:
            return
        done = {**response, "status": status}
        if status == "cancelled":
            done["status_details"] = {"type": "cancelled", "reason": "client_cancelled"}
        with contextlib.suppress(ConnectionClosed):
            await self.send({"type": "response.done", "response": done})

    async def call(self, rid: str, name: str) -> dict:
        arguments = json.dumps(self.knobs.tool_args)
        item = {"id": self.fake.new_id("item"), "type": "function_call", "status": "in_progress",
                "name": name, "call_id": self.fake.new_id("call"), "arguments": ""}
        where = {"response_id": rid, "item_id": item["id"], "output_index": 0,
                 "call_id": item["call_id"]}
        await self.send({"type": "response.output_item.added", "response_id": rid,
                         "output_index": 0, "item": item})
        await self.send({"type": "response.function_call_arguments.delta", **where,
                         "delta": arguments})
        await self.send({"type": "response.function_call_arguments.done", **where, "name": name,
                         "arguments": arguments})
        item = {**item, "status": "completed", "arguments": arguments}
        self.conn.items.append(item)
        await self.send({"type": "response.output_item.done", "response_id": rid,
                         "output_index": 0, "item": item})
        return item

    async def say(self, rid: str, text: str) -> dict:
        item = {"id": self.fake.new_id("item"), "type": "message", "role": "assistant",
                "status": "in_progress", "content": []}
        where = {"response_id": rid, "item_id": item["id"], "output_index": 0, "content_index": 0}
        await self.send({"type": "response.output_item.added", "response_id": rid,
                         "output_index": 0, "item": item})
        audio = tone(440.0, self.knobs.reply_audio_s, RATE_HZ)
        step = int(RATE_HZ * DELTA_S) * 2
        pieces = [audio[at:at + step] for at in range(0, len(audio), step)]
        for index, (piece, words) in enumerate(zip(pieces, _spread(text, len(pieces)))):
            if index and self.knobs.audio_delay_s:
                await asyncio.sleep(self.knobs.audio_delay_s)
            if words:
                await self.send({"type": "response.output_audio_transcript.delta", **where,
                                 "delta": words})
            await self.send({"type": "response.output_audio.delta", **where,
                             "delta": base64.b64encode(piece).decode()})
        await self.send({"type": "response.output_audio.done", **where})
        await self.send({"type": "response.output_audio_transcript.done", **where,
                         "transcript": text})
        item = {**item, "status": "completed",
                "content": [{"type": "output_audio", "transcript": text}]}
        self.conn.items.append(item)
        await self.send({"type": "response.output_item.done", "response_id": rid,
                         "output_index": 0, "item": item})
        return item


def _spread(text: str, parts: int) -> list[str]:
    """`text` in `parts` pieces of whole words (the last ones maybe empty) that join back."""
    words = re.findall(r"\S+\s*", text)
    pieces = [*words[:parts - 1], "".join(words[parts - 1:])]
    return pieces + [""] * (parts - len(pieces))

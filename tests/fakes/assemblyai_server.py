"""A local AssemblyAI Universal-Streaming v3 server for contract tests.

A real WebSocket server (websockets' asyncio server, in a thread of its own so sync and
async tests alike can use it) that speaks v3 as the docs show it: `Begin`; partial `Turn`
messages as audio arrives; on `ForceEndpoint` an end-of-turn `Turn`, then with
`format_turns=true` a formatted copy; `Termination` then close 1000 on `Terminate`.
Failures end as the real service ends them: an `Error` frame, then a close with its code.

    with FakeAssemblyAI(api_key="k", transcripts=["Hello there."]) as fake:
        engine = AssemblyAIEngine(Secret("k"), base_url=fake.base_url)
        …
        assert fake.sessions[0].wait_ended().terminated

Knobs (`fake.knobs`, change them at any time; they apply to what happens next):
  transcripts      scripted text of turn 0, 1, … (cycled); the unformatted copy is the
                   text lower-cased without punctuation
  reject_status    answer the handshake with this HTTP status instead of upgrading
  close_code       after Begin, answer the first audio with Error + close(code), e.g. 3005
  close_reason     the Error text / close reason for close_code
  hang_at          "begin": accept, never send Begin; "endpoint": never end a turn; either
                   way Terminate is logged but not answered
  latency_s        delay before every server message
  malformed        answer the first audio with a text frame that is not JSON
  format_delay_s   delay between the unformatted and the formatted end of turn
  drop_formatted   never send the formatted copy
  speech           False: all audio is silence, so no turn ever starts
  server_endpoint_ms  end a turn on the server's own after this much audio in it

Checks like the real service: `Authorization` must be the key (else Error + close 1008,
"Unauthorized Connection"); `speech_model` (no default), `sample_rate` and `encoding`
must be valid (else Error + close 3006, "Input validation error" — the docs say only that
the request fails; 3006 is the code their SDK gives input validation); every audio message
must hold 50–1000 ms (else close 3007, "Input duration violation").
Not modelled: the real service's limit on audio sent faster than real time (3007).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request

SPEECH_MODELS = {"universal-streaming-english", "universal-streaming-multilingual",
                 "u3-rt-pro", "whisper-rt", "universal-3-5-pro"}
WORD_MS = 100  # where the fake places scripted words within a turn's audio


@dataclass
class Knobs:
    transcripts: list[str] = field(default_factory=lambda: ["Hello world."])
    reject_status: int | None = None
    close_code: int | None = None
    close_reason: str = "Session Cancelled: An error occurred"
    hang_at: str | None = None
    latency_s: float = 0.0
    malformed: bool = False
    format_delay_s: float = 0.0
    drop_formatted: bool = False
    speech: bool = True
    server_endpoint_ms: int | None = None


@dataclass
class SessionLog:
    """What one connection asked and sent, for tests to assert on."""

    path: str
    query: dict[str, str]
    authorization: str | None
    audio_messages: list[int] = field(default_factory=list)  # bytes per binary message
    control: list[dict] = field(default_factory=list)  # JSON messages received, in order
    sent: list[dict | str] = field(default_factory=list)  # messages sent, in order
    terminated: bool = False  # the client sent Terminate
    close_code: int | None = None  # how the connection ended
    ended: threading.Event = field(default_factory=threading.Event)  # set once it has

    def wait_ended(self, timeout_s: float = 5.0) -> SessionLog:
        """The server side finishes a moment after the client: wait before asserting."""
        if not self.ended.wait(timeout_s):
            raise AssertionError("the fake's session did not end")
        return self

    @property
    def audio_bytes(self) -> int:
        return sum(self.audio_messages)


def unformatted(text: str) -> str:
    return re.sub(r"[^\w\s']", "", text).lower()


class _Turns:
    """The scripted recogniser of one connection: which Turn messages audio produces."""

    def __init__(self, knobs: Knobs, sample_rate: int, format_turns: bool) -> None:
        self.knobs, self.sample_rate, self.format_turns = knobs, sample_rate, format_turns
        self.order = 0
        self.audio_ms = 0  # session audio time so far
        self.turn_start_ms: int | None = None  # None: no turn in progress
        self.chunks = 0

    def words(self, formatted: bool) -> list[str]:
        text = self.knobs.transcripts[self.order % len(self.knobs.transcripts)]
        return (text if formatted else unformatted(text)).split()

    def message(self, count: int, end: bool, formatted: bool) -> dict:
        words = [{"start": self.turn_start_ms + i * WORD_MS,
                  "end": self.turn_start_ms + i * WORD_MS + WORD_MS - 20,
                  "text": w, "confidence": 0.9, "word_is_final": end or i < count - 1}
                 for i, w in enumerate(self.words(formatted)[:count])]
        final = [w["text"] for w in words if w["word_is_final"]]
        return {"turn_order": self.order, "turn_is_formatted": formatted, "end_of_turn": end,
                "transcript": " ".join(final), "end_of_turn_confidence": 0.9 if end else 0.1,
                "words": words, "utterance": "", "type": "Turn"}

    def audio(self, ms: int) -> list[dict]:
        start, self.audio_ms = self.audio_ms, self.audio_ms + ms
        if not self.knobs.speech:
            return []
        if self.turn_start_ms is None:
            self.turn_start_ms, self.chunks = start, 0
        self.chunks += 1
        out = [self.message(min(self.chunks, len(self.words(False))), False, False)]
        limit = self.knobs.server_endpoint_ms
        if limit is not None and self.audio_ms - self.turn_start_ms >= limit:
            out += self.end()
        return out

    def end(self) -> list[dict]:
        """The end-of-turn message(s); nothing when no turn is in progress (no speech)."""
        if self.turn_start_ms is None:
            return []
        out = [self.message(len(self.words(False)), True, False)]
        if self.format_turns and not self.knobs.drop_formatted:
            out.append(self.message(len(self.words(True)), True, True))
        self.order, self.turn_start_ms = self.order + 1, None
        return out


class FakeAssemblyAI:
    def __init__(self, api_key: str = "test-key", transcripts: list[str] | None = None) -> None:
        self.api_key = api_key
        self.knobs = Knobs()
        if transcripts is not None:
            self.knobs.transcripts = list(transcripts)
        self.sessions: list[SessionLog] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> FakeAssemblyAI:
        ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(ready),),
                                        name="fake-assemblyai", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake AssemblyAI server did not start")
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> FakeAssemblyAI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _serve(self, ready: threading.Event) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with serve(self._session, "127.0.0.1", 0, process_request=self._handshake,
                         compression=None) as server:
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await self._stop.wait()

    def _handshake(self, connection: ServerConnection, request: Request):
        url = urlsplit(request.path)
        if url.path != "/v3/ws":
            return connection.respond(404, "Not Found\n")
        if self.knobs.reject_status is not None:
            return connection.respond(self.knobs.reject_status, "Rejected\n")
        return None

    async def _session(self, ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path)
        log = SessionLog(url.path, dict(parse_qsl(url.query)),
                         ws.request.headers.get("Authorization"))
        self.sessions.append(log)
        try:
            await self._converse(ws, log)
        except ConnectionClosed:
            pass
        finally:
            await ws.wait_closed()
            log.close_code = ws.close_code
            log.ended.set()

    async def _converse(self, ws: ServerConnection, log: SessionLog) -> None:
        refusal = self._refusal(log)
        if refusal:
            return await self._fail(ws, log, *refusal)
        rate = int(log.query["sample_rate"])
        turns = _Turns(self.knobs, rate, log.query.get("format_turns") == "true")
        opened = time.monotonic()
        if self.knobs.hang_at != "begin":
            await self._send(ws, log, {"type": "Begin", "id": str(uuid.uuid4()),
                                       "expires_at": int(time.time()) + 10800})
        async for message in ws:
            if isinstance(message, bytes):
                done = await self._audio(ws, log, turns, message, rate)
            else:
                done = await self._control(ws, log, turns, message, opened)
            if done:
                return

    def _refusal(self, log: SessionLog) -> tuple[int, str] | None:
        if log.authorization != self.api_key:
            return 1008, "Unauthorized Connection: Invalid API key"
        query = log.query
        if query.get("speech_model") not in SPEECH_MODELS:
            return 3006, "Input validation error: speech_model is required and must be valid"
        if not query.get("sample_rate", "").isdigit() or int(query["sample_rate"]) <= 0:
            return 3006, "Input validation error: sample_rate must be a positive integer"
        if query.get("encoding", "pcm_s16le") != "pcm_s16le":
            return 3006, "Input validation error: encoding must be pcm_s16le here"
        return None

    async def _audio(self, ws, log: SessionLog, turns: _Turns, pcm: bytes, rate: int) -> bool:
        log.audio_messages.append(len(pcm))
        ms = len(pcm) * 1000 // (2 * rate)
        if not 50 <= ms <= 1000:
            await self._fail(ws, log, 3007,
                             f"Input duration violation: {ms} ms. Expected between 50 and 1000 ms")
            return True
        knobs = self.knobs
        if knobs.close_code is not None:
            await self._fail(ws, log, knobs.close_code, knobs.close_reason)
            return True
        if knobs.malformed:
            await self._send(ws, log, "{this is not json")
            return False
        for message in turns.audio(ms):
            await self._send(ws, log, message)
        return False

    async def _control(self, ws, log: SessionLog, turns: _Turns, text: str, opened: float) -> bool:
        try:
            message = json.loads(text)
            kind = message["type"]
        except (ValueError, TypeError, KeyError):
            await self._fail(ws, log, 3006, f"Invalid JSON: {text[:40]}")
            return True
        log.control.append(message)
        if kind == "Terminate":
            log.terminated = True
            if self.knobs.hang_at:
                return False  # a hung server does not answer; the client must close
            await self._send(ws, log, {
                "type": "Termination", "audio_duration_seconds": turns.audio_ms // 1000,
                "session_duration_seconds": int(time.monotonic() - opened)})
            await ws.close(1000)
            return True
        if kind == "ForceEndpoint" and self.knobs.hang_at != "endpoint":
            for i, end in enumerate(turns.end()):
                if i and self.knobs.format_delay_s:
                    await asyncio.sleep(self.knobs.format_delay_s)
                await self._send(ws, log, end)
        elif kind not in ("ForceEndpoint", "UpdateConfiguration", "KeepAlive"):
            await self._fail(ws, log, 3006, f"Invalid Message Type: {kind}")
            return True
        return False

    async def _send(self, ws, log: SessionLog, message: dict | str) -> None:
        if self.knobs.latency_s:
            await asyncio.sleep(self.knobs.latency_s)
        log.sent.append(message)
        with contextlib.suppress(ConnectionClosed):  # the client left: still log what it sent
            await ws.send(message if isinstance(message, str) else json.dumps(message))

    async def _fail(self, ws, log: SessionLog, code: int, reason: str) -> None:
        await self._send(ws, log, {"type": "Error", "error_code": code, "error": reason})
        await ws.close(code, reason[:120])

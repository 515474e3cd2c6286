"""Streaming STT: AssemblyAI Universal-Streaming v3, one WebSocket per speaker session.

Wire facts (AssemblyAI docs: Streaming API reference, "Message sequence", "Common session
errors and closures"; SDK `assemblyai.streaming.v3`): `{base}/v3/ws?sample_rate&encoding&
speech_model[&format_turns]`, key in `Authorization`; `speech_model` is always sent (the
documented API has no default). Server: `Begin`, `Turn` {turn_order, transcript,
end_of_turn, turn_is_formatted, words}, `Termination` {audio_duration_seconds,
session_duration_seconds}, and before a failure close an `Error` {error_code, error}.
Client: binary PCM of 50–1000 ms a message (else close 3007), `ForceEndpoint`, `Terminate`.
With format_turns a turn ends twice (unformatted, then formatted; same turn_order).
Billing runs while the socket is open: a stream opens at the first audio and is always
terminated. Nothing here retries: retries have one owner, the fallback chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import NamedTuple
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from shared.errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderQuotaError,
    ProviderTimeout,
    ProviderUnavailable,
)
from shared.languages import primary_tag
from shared.secrets import Secret
from shared.usage import Usage, record

SIX = frozenset({"en", "es", "fr", "de", "it", "pt"})
MODEL_LANGUAGES = {"universal-streaming-english": frozenset({"en"}),  # docs: Model selection
                   "universal-streaming-multilingual": SIX, "u3-rt-pro": SIX}
FORMAT_TURNS_MODELS = {"universal-streaming-english", "universal-streaming-multilingual"}
TERMINATE = json.dumps({"type": "Terminate"})
FORCE_ENDPOINT = json.dumps({"type": "ForceEndpoint"})
STALE_MARGIN_MS = 250  # server word times may lead our audio clock slightly


# --- Wire → events: pure -------------------------------------------------------------
Begin = NamedTuple("Begin", [("session_id", str)])
# first_word_ms: session audio time of the turn's first word (None before any word)
Turn = NamedTuple("Turn", [("order", int), ("text", str), ("end_of_turn", bool),
                           ("formatted", bool), ("first_word_ms", int | None)])
Termination = NamedTuple("Termination", [("audio_s", float | None), ("session_s", float | None)])
ServerError = NamedTuple("ServerError", [("code", int | None), ("message", str)])
Other = NamedTuple("Other", [("kind", str)])  # SpeechStarted, Warning, …: nothing to do
Event = Begin | Turn | Termination | ServerError | Other


def parse_event(raw: str | bytes) -> Event:
    """One server message → an event; anything off the documented shape is a bad response."""
    try:
        data = json.loads(raw)
        match _typed(data, dict).get("type"):
            case "Begin":
                return Begin(_typed(data["id"], str))
            case "Turn":
                words = _typed(data.get("words") or [], list)
                return Turn(_typed(data["turn_order"], int), _typed(data["transcript"], str),
                            _typed(data["end_of_turn"], bool),
                            _typed(data.get("turn_is_formatted", False), bool),
                            _typed(words[0]["start"], int) if words else None)
            case "Termination":
                return Termination(_typed(data.get("audio_duration_seconds"), NUMBER),
                                   _typed(data.get("session_duration_seconds"), NUMBER))
            case "Error":
                return ServerError(_typed(data.get("error_code"), NUMBER),
                                   _typed(data.get("error", ""), str))
            case None if "error" in data:  # the older, untyped error frame
                return ServerError(None, _typed(data["error"], str))
            case str(kind):
                return Other(kind)
        raise TypeError("message without a type")
    except (ValueError, TypeError, KeyError) as exc:
        raise ProviderBadResponse("AssemblyAI sent a message off its documented shape") from exc


NUMBER = (int, float, type(None))  # optional numbers


def _typed(value, kind):
    """value, if JSON gave it the expected type (a bool is no number here)."""
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise TypeError(f"expected {kind}")
    return value


def status_error(status: int) -> ProviderError:
    """An HTTP status that refused the WebSocket handshake."""
    what = f"AssemblyAI refused the stream (HTTP {status})"
    if status in (401, 403):
        return ProviderAuthError(what)
    if status in (402, 429):
        return ProviderQuotaError(what)
    return ProviderUnavailable(what, retryable=status >= 500)  # other 4xx: ours to fix


def close_error(code: int | None, reason: str) -> ProviderError:
    """A close we did not ask for. 1008 (older docs: 4001) is a key problem, except that the
    same code also reports the concurrency limit and an account without balance."""
    where = f"AssemblyAI closed the stream ({code})"
    account = any(w in reason.lower() for w in ("concurren", "balance", "fund"))
    if code in (1008, 4001) and not account:
        return ProviderAuthError(where)
    if code in (1008, 4001, 3009, 4002, 4003, 4029, 4102):
        return ProviderQuotaError(where)
    if code in (3006, 3007, 4000, 4032, 4033, 4100, 4101):  # it refused what we sent:
        return ProviderUnavailable(where, retryable=False)  # sending it again cannot help
    return ProviderUnavailable(where)  # 3005 server error, 3008 expiry, 1006 dropped, …


# --- Utterance bookkeeping: pure -----------------------------------------------------
class TurnTracker:
    """Which `Turn` messages belong to the utterance in progress, and its text. The server
    may end turns on its own inside one of our utterances (the edge decides where they end),
    so an utterance is every turn seen since the last `take()`. Late messages of turns
    taken (the formatted copy) are told by turn_order; new turns of earlier audio, by time."""

    def __init__(self) -> None:
        self.taken_order = -1
        self.start_ms = 0  # session audio time where the utterance in progress began
        self.turns: dict[int, tuple[str, bool, bool]] = {}  # order → text, ended, formatted
        self.ends = 0  # end-of-turn messages accepted so far

    def on_turn(self, turn: Turn) -> None:
        known = self.turns.get(turn.order)
        early = turn.first_word_ms is not None \
            and turn.first_word_ms + STALE_MARGIN_MS < self.start_ms
        if turn.order <= self.taken_order or (known is None and early):
            return
        if known and known[1] and (not turn.end_of_turn or known[2] > turn.formatted):
            return  # an ended turn never reopens; a formatted text is never replaced
        self.turns[turn.order] = (turn.text, turn.end_of_turn, turn.formatted)
        self.ends += turn.end_of_turn

    def in_progress(self) -> bool:
        return any(not ended for _, ended, _ in self.turns.values())

    def all_formatted(self) -> bool:
        return all(formatted for _, ended, formatted in self.turns.values() if ended)

    def text(self) -> str:
        return " ".join(t.strip() for _, (t, _, _) in sorted(self.turns.items()) if t.strip())

    def take(self, end_ms: int) -> str:
        """The utterance's final text; later messages of its turns are stale from now on."""
        text = self.text()
        self.taken_order = max([self.taken_order, *self.turns])
        self.turns, self.start_ms = {}, end_ms
        return text


class AudioBatcher:
    """Re-chunks PCM16 so that every message holds 50–1000 ms, the last one included."""

    def __init__(self, sample_rate: int) -> None:
        self.min_bytes = sample_rate * 2 * 50 // 1000
        self.max_bytes = sample_rate * 2
        self.pending = b""

    def push(self, pcm: bytes) -> list[bytes]:
        self.pending += pcm
        out = []
        while len(self.pending) >= self.min_bytes:  # a shorter rest waits for more audio
            size = min(len(self.pending), self.max_bytes)
            out.append(self.pending[:size])
            self.pending = self.pending[size:]
        return out

    def flush(self) -> bytes:
        """What is left, padded with silence to the 50 ms minimum ('' if nothing)."""
        tail, self.pending = self.pending, b""
        return tail + bytes(self.min_bytes - len(tail)) if tail else b""


# --- I/O -----------------------------------------------------------------------------
class _NoDebug(logging.LoggerAdapter):
    """websockets logs handshake headers, the key among them, at DEBUG: never enable it."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


_WS_LOG = _NoDebug(logging.getLogger("parley.stt.assemblyai"), {})


class AssemblyAISession:
    """One speaker's stream; opened at the first audio, re-opened after a failure."""

    def __init__(self, engine: AssemblyAIEngine) -> None:
        self._engine, self._closed = engine, False
        self._changed = asyncio.Event()
        self._reset()

    def _reset(self) -> None:
        self._ws: ClientConnection | None = None
        self._tracker = TurnTracker()
        self._batcher = AudioBatcher(self._engine.sample_rate)
        # the reader task, the stream's failure, its Error frame, its Termination
        self._reader = self._failure = self._error_frame = self._termination = None
        self._begun = self._terminating = False
        self._sent_bytes, self._utterance_bytes, self._partial = 0, 0, ""
        self._billed_until = self._billed_s = 0.0

    async def feed(self, pcm: bytes) -> str | None:
        if len(pcm) % 2:
            raise ValueError("PCM16 audio must have an even number of bytes")
        try:
            await self._ensure_stream()
            for chunk in self._batcher.push(pcm):
                await self._send(chunk)
            self._utterance_bytes += len(pcm)
            if self._failure:
                raise self._failure
        except ProviderError:
            await asyncio.shield(self._teardown())
            raise
        text = self._tracker.text()
        if text and text != self._partial:
            self._partial = text
            return text
        return None

    async def finish(self) -> str:
        if self._ws is None or not self._utterance_bytes:
            return ""  # no audio in this utterance (or closed): nothing to ask
        try:
            tail = self._batcher.flush()
            if tail:
                await self._send(tail)
            await self._send(FORCE_ENDPOINT)
            text = await self._final_text()
        except ProviderError:
            await asyncio.shield(self._teardown())
            raise
        self._utterance_bytes, self._partial = 0, ""
        self._bill(time.monotonic())  # AssemblyAI bills open time: each utterance its share
        return text

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await asyncio.shield(self._teardown())  # Terminate goes out even if cancelled

    async def _final_text(self) -> str:
        tracker, engine, ends_before = self._tracker, self._engine, self._tracker.ends
        # Nothing in progress may mean the server ended the turn itself or heard no speech;
        # give audio still in flight a moment to show up as a turn before trusting that.
        await self._wait(lambda: tracker.in_progress() or tracker.ends > ends_before,
                         engine.settle_s)
        if not await self._wait(lambda: not tracker.in_progress(), engine.timeout_s):
            raise ProviderTimeout(f"AssemblyAI did not end the turn in {engine.timeout_s} s")
        if engine.format_turns:  # the formatted copy is nicer, not worth a long wait
            await self._wait(tracker.all_formatted, engine.format_wait_s)
        return tracker.take(self._sent_bytes // (engine.sample_rate * 2 // 1000))

    async def _ensure_stream(self) -> None:
        if self._closed:
            raise ProviderError("AssemblyAI session is closed")
        if self._ws is not None:
            return
        self._reset()
        engine = self._engine
        try:
            async with asyncio.timeout(engine.timeout_s):
                self._ws = await connect(
                    engine.url, additional_headers={"Authorization": engine.key.reveal()},
                    open_timeout=None, close_timeout=engine.terminate_wait_s, logger=_WS_LOG)
        except InvalidStatus as exc:
            raise status_error(exc.response.status_code) from exc
        except TimeoutError as exc:
            raise ProviderTimeout(f"AssemblyAI handshake took over {engine.timeout_s} s") from exc
        except (OSError, InvalidHandshake) as exc:
            raise ProviderUnavailable("AssemblyAI could not be reached") from exc
        self._billed_until = time.monotonic()
        self._reader = asyncio.create_task(self._read(self._ws))
        if not await self._wait(lambda: self._begun, engine.timeout_s):
            raise ProviderTimeout(f"AssemblyAI sent no Begin in {engine.timeout_s} s")

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                match parse_event(raw):
                    case Begin():
                        self._begun = True
                    case Turn() as turn:
                        self._tracker.on_turn(turn)
                    case Termination() as termination:
                        self._termination = termination
                    case ServerError() as error:
                        self._error_frame = error
                self._changed.set()
        except ConnectionClosed:
            pass
        except ProviderBadResponse as exc:
            self._failure = exc
        finally:
            if self._failure is None and not self._terminating:
                self._failure = self._close_failure(ws)
            self._changed.set()

    def _close_failure(self, ws: ClientConnection) -> ProviderError:
        frame = self._error_frame  # its code is the close code; the close reason may be cut
        if frame is not None and frame.code is not None:
            return close_error(int(frame.code), frame.message)
        return close_error(ws.close_code, ws.close_reason or "")

    async def _send(self, data: bytes | str) -> None:
        ws, timeout_s = self._ws, self._engine.timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await ws.send(data)
        except TimeoutError as exc:
            raise ProviderTimeout(f"AssemblyAI took over {timeout_s} s to take audio") from exc
        except ConnectionClosed as exc:
            await asyncio.wait({self._reader}, timeout=timeout_s)  # let it read the reason
            raise self._failure or self._close_failure(ws) from exc
        if isinstance(data, bytes):
            self._sent_bytes += len(data)

    async def _wait(self, done, timeout_s: float) -> bool:
        """Until done() holds (True) or timeout_s passes (False); raises a stream failure."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            self._changed.clear()
            if self._failure:
                raise self._failure
            if done():
                return True
            if loop.time() >= deadline:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._changed.wait()

    async def _teardown(self) -> None:
        """Terminate (bounded), close, and bill the rest of the open time."""
        ws, self._ws = self._ws, None
        if ws is None:
            return
        self._terminating = True
        try:
            with contextlib.suppress(TimeoutError, ConnectionClosed):  # best effort
                async with asyncio.timeout(self._engine.terminate_wait_s):
                    await ws.send(TERMINATE)
                    while self._termination is None and not self._reader.done():
                        self._changed.clear()
                        await self._changed.wait()
        finally:  # closes even if cancelled: an open socket keeps billing
            await ws.close()
            self._reader.cancel()
            self._bill(time.monotonic(), self._termination and self._termination.session_s)

    def _bill(self, now: float, total_s: float | None = None) -> None:
        """Usage for the open time since the last bill; `total_s`, the server's count of
        the whole session's time, wins when known (AssemblyAI bills open time, not audio)."""
        seconds = now - self._billed_until if total_s is None else total_s - self._billed_s
        self._billed_until = now
        if seconds > 0:
            self._billed_s += seconds
            record(Usage("assemblyai", self._engine.speech_model, "stt", audio_seconds=seconds))


class AssemblyAIEngine:
    """SttEngine over AssemblyAI Universal-Streaming v3."""

    sample_rate = 16000

    def __init__(self, api_key: Secret, base_url: str = "wss://streaming.assemblyai.com",
                 speech_model: str = "universal-streaming-english", timeout_s: float = 10.0,
                 name: str = "assemblyai", *, format_turns: bool = True,
                 format_wait_s: float = 0.5, settle_s: float = 0.3,
                 terminate_wait_s: float = 2.0) -> None:
        if speech_model not in MODEL_LANGUAGES:
            raise ValueError(f"AssemblyAI streaming model not one of {sorted(MODEL_LANGUAGES)}")
        if min(timeout_s, format_wait_s, settle_s, terminate_wait_s) <= 0:
            raise ValueError("AssemblyAI waits must be positive")
        self.key, self.name, self.speech_model = api_key, name, speech_model
        self.languages = MODEL_LANGUAGES[speech_model]
        self.timeout_s, self.format_wait_s = timeout_s, format_wait_s
        self.settle_s, self.terminate_wait_s = settle_s, min(terminate_wait_s, timeout_s)
        # u3-rt-pro always formats and takes no format_turns parameter
        self.format_turns = format_turns and speech_model in FORMAT_TURNS_MODELS
        query = urlencode({"sample_rate": self.sample_rate, "encoding": "pcm_s16le",
                           "speech_model": speech_model,
                           **({"format_turns": "true"} if self.format_turns else {})})
        self.url = f"{base_url.rstrip('/')}/v3/ws?{query}"

    def open(self, language: str) -> AssemblyAISession:
        if primary_tag(language) not in self.languages:
            raise ProviderError(f"{self.speech_model} does not recognise {language!r}")
        return AssemblyAISession(self)

    async def warm_up(self) -> None:
        """Nothing to load; opening a stream ahead of audio would only bill idle time."""

"""One client connection: from the first message to the close.

The client-facing rules live in `wire` (validation) and `chunker` (audio cutting); this
module moves bytes between the WebSocket and NATS and keeps the session's bus resources.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import secrets
import time
import uuid

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from services.edge import wire
from services.edge.access import CLOSE_RATE_LIMITED
from services.edge.assistant import AssistantState, new_state, tool_record
from services.edge.auth import ANONYMOUS, Principal
from services.edge.capabilities import admission_problems, assistant_problems, room_warnings
from services.edge.chunker import Chunk, Chunker, SpeechStarted, SpeechStopped
from services.edge.context import EdgeContext
from services.edge.delivery import Delivery
from services.edge.stt_link import SttLink
from services.edge.tool_answers import forward_answer
from services.stt.routing import room_route, solo_route
from shared import bus, metrics, telemetry
from shared.errors import ParleyError
from shared.messages import (
    Assistant,
    AssistantUpdate,
    AudioChunk,
    CancelResponse,
    ClientPresence,
    Listener,
    Route,
    SessionEnd,
    ToolAnswer,
    encode,
)
from shared.state import SessionRecord

log = logging.getLogger("parley.edge")

CLOSE_NORMAL, CLOSE_PROTOCOL, CLOSE_NOT_FOUND, CLOSE_START_TIMEOUT = 1000, 4400, 4404, 4408
CLOSE_FORBIDDEN = 4403
CLOSE_DRAINING = 4503  # the edge is shutting down: resume on another
RENEW_S = 5.0  # a live session renews its record and room membership (and sees Redis fail) this often


def end_reason(idle_s: float, age_s: float, idle_timeout_s: float, max_session_s: float) -> str | None:
    """Why a connected session must end now, if it must."""
    if age_s >= max_session_s:
        return "max_duration"
    if idle_s >= idle_timeout_s:
        return "idle_timeout"
    return None


class SessionClosed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Session:
    def __init__(self, ctx: EdgeContext, ws: ServerConnection, principal: Principal = ANONYMOUS) -> None:
        self.ctx = ctx
        self.ws = ws
        self.principal = principal
        self.slot = None  # this connection's place in the session limits (services/edge/access.py)
        self.quota = ctx.access.quota(principal)
        self.record: SessionRecord | None = None
        self.generation = 0
        self.chunker: Chunker | None = None
        self.stt: SttLink | None = None
        self.subs: list = []
        self.delivery: Delivery | None = None
        self.ended = False
        self.assistant: AssistantState | None = None
        self.last_heard = time.monotonic()
        self.watchdog: asyncio.Task | None = None
        self.warned_degraded = False

    # -- sending -------------------------------------------------------------------------
    async def send(self, event: dict) -> None:
        await self.ws.send(wire.encode_event(event))

    async def send_error(self, code: str, message: str, fatal: bool = False) -> None:
        metrics.CLIENT_ERRORS.labels(code).inc()
        await self.send({"type": "error", "code": code, "message": message, "fatal": fatal})

    async def publish(self, event: dict, msg_id: str | None = None) -> int:
        return await bus.publish_event(self.ctx.js, self.ctx.subjects, self.sid, event, msg_id)

    @property
    def _live_ttl_s(self) -> float:
        """A live record outlives its renewals by a resume window: if this edge dies, the
        client can still resume elsewhere, and then the record goes away by itself."""
        return self.ctx.settings.resume_window_s + 2 * RENEW_S

    @property
    def sid(self) -> str:
        assert self.record is not None
        return self.record.sid

    # -- lifecycle -----------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self._open()
            with telemetry.bound(sid=self.sid):  # every log line of this connection names it
                log.info("%s session on generation %d (%s, %s)", self.record.mode, self.generation,
                         self.record.language, self.principal.name)
                metrics.SESSIONS.inc()
                try:
                    await self._serve()
                finally:
                    metrics.SESSIONS.dec()
                    await self._detach()
                    log.info("connection closed (%s)", "session ended" if self.ended else "resumable")
        except SessionClosed as closed:
            await self.ws.close(closed.code, closed.reason)
        except ConnectionClosed:
            pass
        finally:
            await self.ctx.access.release(self.slot)

    async def _open(self) -> None:
        deadline = time.monotonic() + self.ctx.settings.start_timeout_s
        while True:
            try:
                frame = await asyncio.wait_for(self.ws.recv(), deadline - time.monotonic())
            except (asyncio.TimeoutError, TimeoutError, ValueError):
                raise SessionClosed(CLOSE_START_TIMEOUT, "no session.start in time") from None
            if isinstance(frame, bytes):
                raise SessionClosed(CLOSE_PROTOCOL, "first message must be session.start or session.resume")
            try:
                command = wire.parse_text(frame, self.ctx.limits)
            except wire.ProtocolError as exc:
                await self.send_error(exc.code, exc.message)
                continue  # a malformed start is not fatal; the client may send a good one
            match command:
                case wire.SessionStart():
                    return await self._start(command)
                case wire.SessionResume():
                    return await self._resume(command)
                case _:
                    raise SessionClosed(CLOSE_PROTOCOL, "first message must be session.start or session.resume")

    async def _start(self, start: wire.SessionStart) -> None:
        if start.mode not in self.principal.modes:
            await self.send_error("forbidden", f"these credentials may not use {start.mode} mode", fatal=True)
            raise SessionClosed(CLOSE_FORBIDDEN, "forbidden")
        caps = await self.ctx.capabilities.get()
        engine = start.engine or self.ctx.settings.assistant_engine
        if start.mode == "assistant":
            problems = assistant_problems(caps, start.language, engine)
        else:
            problems = admission_problems(caps, start.language, start.target_language, start.room)
        if problems:
            await self.send_error("provider_unavailable", "; ".join(problems), fatal=True)
            raise SessionClosed(CLOSE_NORMAL, "provider_unavailable")
        token = secrets.token_urlsafe(24)
        sid = uuid.uuid4().hex
        await self._take_slot(sid)
        refused: list[str] = []
        if start.mode == "assistant":
            tools = tuple(tool_record(t.name, t.description, t.parameters, t.timeout_ms) for t in start.tools)
            self.assistant, refused = new_state(sid, start.instructions, tools, self.ctx.server_tools)
        self.record = SessionRecord(
            sid=sid,
            token_hash=_hash_token(token),
            mode=start.mode,
            language=start.language,
            target_language=start.target_language,
            room=start.room,
            input_sample_rate=start.input_sample_rate,
            output_sample_rate=start.output_sample_rate,
            voice=start.voice,
            created_at=time.time(),
            instructions=start.instructions,
            tools=tuple(self.assistant.tools.values()) if self.assistant else (),
            engine=engine,
            principal=self.principal.name,
        )
        await self.ctx.store.save_session(self.record, self._live_ttl_s)
        await self._attach(token, resumed=False, last_seq=None)
        for problem in refused:
            await self.send_error("tool_error", problem)
        if self.record.room_key:
            others = {m.language for m in await self.ctx.store.room_members(self.record.room_key)}
            for message in room_warnings(caps, start.language, others):
                await self.publish({"type": "warning", "code": "provider_unavailable", "message": message})

    async def _resume(self, resume: wire.SessionResume) -> None:
        record = await self.ctx.store.load_session(resume.session_id)
        if (record is None or record.principal != self.principal.name  # foreign looks like unknown
                or not hmac.compare_digest(record.token_hash, _hash_token(resume.resume_token))):
            await self.send_error("session_not_found", "no such session, or it has expired", fatal=True)
            raise SessionClosed(CLOSE_NOT_FOUND, "session_not_found")
        if time.time() - record.created_at >= self.ctx.settings.max_session_s:
            await release_session(self.ctx, record)
            await self.send_error("session_expired", "the session reached its maximum duration", fatal=True)
            raise SessionClosed(CLOSE_NOT_FOUND, "session_expired")
        await self._take_slot(record.sid)
        self.record = record
        if record.mode == "assistant":
            self.assistant, _ = new_state(record.sid, record.instructions, record.tools, self.ctx.server_tools)
        await self.ctx.store.save_session(record, self._live_ttl_s)
        await self._attach(resume.resume_token, resumed=True, last_seq=resume.last_seq)

    async def _take_slot(self, sid: str) -> None:
        self.slot, refusal = await self.ctx.access.take_slot(self.principal, sid)
        if refusal:
            await self.send_error("rate_limited", refusal, fatal=True)
            raise SessionClosed(CLOSE_RATE_LIMITED, "rate_limited")

    async def _attach(self, token: str, resumed: bool, last_seq: int | None) -> None:
        record = self.record
        self.generation = await self.ctx.store.next_generation(record.sid)
        self.ctx.live[record.sid] = self
        await self.send({
            "type": "session.started", "session_id": record.sid, "resume_token": token,
            "resumed": resumed, "mode": record.mode, "language": record.language,
            "target_language": record.target_language, "room": record.room,
            "input_sample_rate": record.input_sample_rate,
            "output_sample_rate": record.output_sample_rate, "voice": record.voice,
            "chunk_ms": self.ctx.settings.chunk_ms,
            **({"engine": record.engine, "tools": [t["name"] for t in record.tools]}
               if record.mode == "assistant" else {}),
        })
        self.delivery = Delivery(self.ctx, record.sid, self.send, self._keep, self.ws.close)
        await self.delivery.start(last_seq)
        self.chunker = self.ctx.new_chunker(record.input_sample_rate)
        if record.room_key:
            await self.ctx.store.join_room(record.room_key, self._listener())
            self.subs.append(await self.ctx.nc.subscribe(self.ctx.subjects.room(record.room_key), cb=self._on_room))
        self.stt = SttLink(self.ctx, record, await self._route(), self._assistant_config)
        await self.stt.start(claim_now=not resumed)
        if self.assistant and resumed:
            await self._control(ClientPresence(record.sid, connected=True))
        self.watchdog = asyncio.create_task(self._watch())
        if record.room_key:
            await self.ctx.nc.publish(self.ctx.subjects.room(record.room_key), b"changed")
        await self._warn_if_degraded()

    async def _warn_if_degraded(self) -> None:
        """Tell the client once each time Redis goes away under it (and again if it comes
        back and fails again)."""
        degraded = self.ctx.store.degraded and bool(self.ctx.settings.redis_url)
        if degraded and not self.warned_degraded:
            await self.publish({"type": "warning", "code": "state_degraded",
                                "message": "session state is in memory only: resume works on this edge only"})
        self.warned_degraded = degraded

    def _assistant_config(self) -> Assistant | None:
        if self.assistant is None:
            return None
        r = self.record
        return self.assistant.config(r.language, r.output_sample_rate, r.voice, r.engine)

    async def _control(self, message) -> None:
        await self.ctx.nc.publish(self.ctx.subjects.ctl(self.sid), encode(message))

    def _listener(self) -> Listener:
        r = self.record
        return Listener(r.sid, r.language, r.output_sample_rate, r.voice)

    async def _route(self):
        r = self.record
        if r.mode == "assistant":
            return Route(captions_to=(r.sid,), listeners=())  # the answer comes from the assistant
        if r.room_key:
            return room_route(r.sid, await self.ctx.store.room_members(r.room_key))
        return solo_route(r.sid, r.target_language, r.output_sample_rate, r.voice)

    async def _on_room(self, msg) -> None:
        if self.stt is not None:
            await self.stt.update_route(await self._route())

    def _keep(self, event: dict) -> bool:
        """Whether the client sees this event (barge-in drops audio of a cancelled reply)."""
        rate = self.record.output_sample_rate
        return self.assistant is None or self.assistant.should_send(event, time.monotonic(), rate)

    # -- the live loop -------------------------------------------------------------------
    async def _watch(self) -> None:
        """End an idle or over-long session; renew its record and room membership."""
        s = self.ctx.settings
        while True:
            await asyncio.sleep(min(RENEW_S, s.idle_timeout_s / 4, s.max_session_s / 4))
            idle_s, age_s = time.monotonic() - self.last_heard, time.time() - self.record.created_at
            reason = end_reason(idle_s, age_s, s.idle_timeout_s, s.max_session_s)
            if reason:
                return await self._end(reason)
            await self.ctx.store.save_session(self.record, self._live_ttl_s)
            if self.record.room_key:
                await self.ctx.store.join_room(self.record.room_key, self._listener())
            await self._warn_if_degraded()

    async def _serve(self) -> None:
        async for frame in self.ws:
            self.last_heard = time.monotonic()
            try:
                if isinstance(frame, bytes):
                    command = wire.parse_binary(frame, self.record.input_sample_rate, self.ctx.limits)
                else:
                    command = wire.parse_text(frame, self.ctx.limits, sample_rate=self.record.input_sample_rate)
            except wire.ProtocolError as exc:
                # A bad frame counts against messages per second too: a flood of them is
                # held to the limit like any other, and each answered only while under it.
                if await self.quota.admit(exc, self.record.input_sample_rate, self.send_error):
                    await self.send_error(exc.code, exc.message)
                continue
            metrics.MESSAGES_IN.labels(type(command).__name__).inc()
            if not await self.quota.admit(command, self.record.input_sample_rate, self.send_error):
                continue  # over a rate limit: dropped (the client is told)
            if await self._dispatch(command):
                return

    async def _dispatch(self, command) -> bool:
        """Handle one client command; True when the session is over."""
        match command:
            case wire.AudioAppend(pcm=pcm):
                await self._audio(self.chunker.feed(pcm))
            case wire.AudioCommit():
                await self._audio(self.chunker.commit())
            case wire.Ping(id=ping_id):
                await self.send({"type": "pong", "id": ping_id})
            case wire.Ack():
                pass  # events stay in the out-stream for the resume window either way
            case wire.SessionEnd():
                await self._end("client_ended")
                return True
            case wire.SessionStart() | wire.SessionResume():
                await self.send_error("invalid_message", "the session has already started")
            case wire.ToolRegister() if self.assistant:
                await self._register(command)
            case wire.ToolUnregister(name=name) if self.assistant:
                if not self.assistant.unregister(name):
                    await self.send_error("invalid_message", f"no tool named {name!r} is registered")
                else:
                    await self._tools_changed()
            case wire.ToolResult() if self.assistant:
                await self._tool_result(command)
            case wire.ResponseCancel() if self.assistant:
                await self._cancel_reply()
            case _:
                await self.send_error("invalid_message", f"{type(command).__name__} needs assistant mode")
        return False

    # -- assistant mode ------------------------------------------------------------------
    async def _register(self, tool: wire.ToolRegister) -> None:
        try:
            self.assistant.register(tool_record(tool.name, tool.description, tool.parameters, tool.timeout_ms))
        except ParleyError as exc:
            await self.send_error(exc.code, str(exc))
            return
        await self._tools_changed()

    async def _tools_changed(self) -> None:
        self.record = dataclasses.replace(self.record, tools=tuple(self.assistant.tools.values()))
        await self.ctx.store.save_session(self.record, self._live_ttl_s)
        await self._control(AssistantUpdate(self.sid, self._assistant_config()))

    async def _tool_result(self, result: wire.ToolResult) -> None:
        answer = ToolAnswer(self.sid, result.call_id, result.output, result.error)
        # Retried while no turn listens: its tools worker may have died and the turn be on
        # its way to another worker (issue 5, chaos tests).
        if not await forward_answer(self.ctx.nc, self.ctx.subjects.tool_answers(self.sid), answer):
            await self.send_error("tool_error", f"no tool call {result.call_id!r} is waiting for a result "
                                                "(unknown, already answered, or timed out)")

    async def _cancel_reply(self) -> None:
        rid = self.assistant.talking(time.monotonic())
        if rid is not None:
            self.assistant.cancel(rid)
            await self._control(CancelResponse(self.sid, rid))

    async def _audio(self, actions) -> None:
        for action in actions:
            match action:
                case SpeechStarted(utterance=n):
                    if self.assistant:  # speaking over the assistant interrupts it
                        await self._cancel_reply()
                    await self.publish({"type": "speech.started", "utterance_id": self._utterance_id(n)})
                case SpeechStopped(utterance=n):
                    await self.publish({"type": "speech.stopped", "utterance_id": self._utterance_id(n)})
                case Chunk():
                    await self.stt.send(self._bus_chunk(action))

    def _bus_chunk(self, c: Chunk) -> AudioChunk:
        rate = self.record.input_sample_rate
        return AudioChunk(self.sid, self._utterance_id(c.utterance), c.index, rate, c.pcm, c.last)

    def _utterance_id(self, n: int) -> str:
        # The generation keeps ids unique across reconnections (dedup keys are built on them).
        return f"{self.sid}-{self.generation}-{n}"

    async def _end(self, reason: str) -> None:
        self.ended = True
        seq = await self.publish({"type": "session.ended", "reason": reason})
        await self.delivery.wait_sent(seq, timeout_s=2.0)
        await self.ws.close(CLOSE_NORMAL, reason)

    async def _detach(self) -> None:
        """The connection is gone: finish the utterance in progress so its results are kept
        for a resume; end the session for good when the client said so."""
        if self.ctx.live.get(self.sid) is self:  # a resume may already have replaced us here
            del self.ctx.live[self.sid]
        if self.watchdog is not None:
            self.watchdog.cancel()
        if self.chunker is not None and not self.ended:
            try:
                await self._audio(self.chunker.commit())
            except Exception:
                log.exception("could not flush the utterance in progress of %s", self.sid)
        if self.delivery is not None:
            await self.delivery.stop()
        for sub in self.subs:
            try:
                await sub.unsubscribe()
            except Exception:
                pass
        if self.stt is not None:
            await self.stt.stop()
        if self.assistant and not self.ended:
            await self._control(ClientPresence(self.sid, connected=False))
        if self.ended:
            await release_session(self.ctx, self.record)
        elif await self.ctx.store.generation(self.sid) == self.generation:  # not resumed meanwhile
            await self.ctx.store.save_session(self.record, self.ctx.settings.resume_window_s)
            self.ctx.schedule_expiry(self.record, self.generation)


async def release_session(ctx: EdgeContext, record: SessionRecord) -> None:
    """Drop every per-session resource: the STT owner's stream, room membership, state."""
    await ctx.nc.publish(ctx.subjects.ctl(record.sid), encode(SessionEnd(record.sid)))
    if record.room_key:
        await ctx.store.leave_room(record.room_key, record.sid)
        await ctx.nc.publish(ctx.subjects.room(record.room_key), b"changed")
    await ctx.store.delete_session(record.sid)

"""One realtime assistant session, owned by this worker (see owner.py for the claim).

One upstream OpenAI Realtime session (`RealtimeUpstream`) does recognition, reasoning and
speech; this object moves the edge's audio in, publishes durable events out, and runs
tool calls through the session's `ToolRegistry`: an unknown tool or bad arguments go back
to the model as an error output and never reach the client; a valid call becomes a
`tool.call` and waits for its answer, its timeout, or (client gone) the resume window.
Barge-in drops the reply's audio here, whatever upstream still sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from typing import Any

from services.tools.realtime import events as ev
from services.tools.realtime.upstream import RealtimeUpstream, Recreated, SessionConfig
from services.tools.registry import (
    CallOutcome,
    PendingCalls,
    ToolRegistry,
    session_registry,
    validate_arguments,
)
from shared import bus
from shared.audio import resample
from shared.audio_owner import AudioIntake, Lease
from shared.errors import ParleyError, ProviderError
from shared.messages import (
    Assistant,
    AssistantUpdate,
    AudioChunk,
    CancelResponse,
    ClientPresence,
    SessionEnd,
    SttClaim,
    ToolAnswer,
    ToolAnswerAck,
    decode,
    encode,
)
from shared.worker import Runtime

log = logging.getLogger("parley.tools.realtime")

MIN_COMMIT_BYTES = ev.RATE_HZ * 2 // 10  # 100 ms at 24 kHz: OpenAI refuses a shorter commit
STATUSES = {"completed": "completed", "cancelled": "cancelled"}  # anything else: "failed"


def build_registry(sid: str, assistant: Assistant) -> ToolRegistry:
    """The session's client tools (server webhooks are not offered to Realtime sessions)."""
    registry, problems = session_registry(sid, assistant.tools)
    for problem in problems:
        log.warning("session %s: %s", sid, problem)
    return registry


def session_config(assistant: Assistant, registry: ToolRegistry) -> SessionConfig:
    tools = tuple(ev.tool_definition(**entry["function"]) for entry in registry.for_model())
    return SessionConfig(assistant.instructions, tools, language=assistant.language,
                         voice=assistant.voice)


def model_output(outcome: CallOutcome) -> Any:
    """What the model reads as a call's result (a `function_call_output`'s JSON): the
    client's output as it came, or an error naming its protocol code."""
    if outcome.ok:
        return outcome.output
    return {"error": f"{outcome.error_code}: {outcome.error}"}


class RealtimeSession:
    """One claimed session: audio in, events out, tool calls, barge-in, lease."""

    def __init__(self, runtime: Runtime, claim: SttClaim, worker_id: str, upstream: RealtimeUpstream,
                 release) -> None:
        self.runtime, self.sid, self.worker_id = runtime, claim.sid, worker_id
        self.assistant = claim.assistant
        self.registry = build_registry(claim.sid, claim.assistant)
        self.upstream = upstream
        self.release = release  # async (sid) -> None
        self.pending = PendingCalls()
        self.call_responses: dict[str, str] = {}  # call id → the response that made it
        self.sends: dict[str, int] = {}  # call id → how many times it was published
        self.intake = AudioIntake(runtime, claim.sid, "realtime bridge")
        self.lease = Lease(runtime, claim.sid, worker_id)
        self.utterance_bytes = 0
        self.awaiting_transcript: deque[str] = deque()  # committed utterances, oldest first
        self.active: str | None = None  # the response in progress upstream
        self.cancelled: set[str] = set()
        self.audio_sent: dict[str, int] = {}  # response id → audio.delta events published
        self.text: dict[str, str] = {}
        self.want_response = False  # tool outputs are in; answer once nothing else is pending
        self.wake = asyncio.Event()  # the deadline watcher looks again
        self.subs: list = []
        self.tasks: list[asyncio.Task] = []

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        nc, subjects = self.runtime.nc, self.runtime.subjects
        self.subs += [await nc.subscribe(subjects.audio(self.sid), cb=self.intake.on_audio),
                      await nc.subscribe(subjects.ctl(self.sid), cb=self._on_ctl),
                      await nc.subscribe(subjects.tool_answers(self.sid), cb=self._on_answer)]
        for job in (self._feed(), self._pump(), self._watch_deadlines(), self.lease.keep(self.intake, self._let_go)):
            self.tasks.append(asyncio.create_task(job))

    async def close(self) -> None:
        for sub in self.subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.pending.abandon_all("the session ended")
        await self.upstream.close()

    def _let_go(self) -> None:
        # Not awaited: releasing cancels the very task or callback that asks for it.
        self._releasing = asyncio.create_task(self.release(self.sid))

    async def _publish(self, event: dict[str, Any], msg_id: str) -> None:
        await bus.publish_event(self.runtime.js, self.runtime.subjects, self.sid, event,
                                msg_id=f"{self.sid}:{msg_id}")

    # -- audio in --------------------------------------------------------------------------

    async def _feed(self) -> None:
        while True:
            chunk = await self.intake.next_chunk()
            try:
                await self._take(chunk)
            except Exception:
                log.exception("audio of %s could not be sent upstream", chunk.utterance_id)

    async def _take(self, chunk: AudioChunk) -> None:
        pcm = resample(chunk.pcm, chunk.sample_rate, ev.RATE_HZ)
        if pcm:
            await self.upstream.append_audio(pcm)
            self.utterance_bytes += len(pcm)
        if not chunk.last:
            return
        if self.utterance_bytes >= MIN_COMMIT_BYTES:
            if self.active and self.active not in self.cancelled:
                await self._cancel(self.active)  # the user spoke over the reply: it is stale
            self.awaiting_transcript.append(chunk.utterance_id)
            await self.upstream.commit_and_respond()
        else:
            await self.upstream.clear_audio()  # a click, not a turn
        self.utterance_bytes = 0
        await self.lease.finish(chunk.utterance_id)

    # -- control ---------------------------------------------------------------------------

    async def _on_ctl(self, msg) -> None:
        try:
            control = decode(msg.data)
        except ValueError:
            return
        match control:
            case AssistantUpdate(assistant=assistant):
                self.assistant = assistant
                self.registry = build_registry(self.sid, assistant)
                await self.upstream.update(session_config(assistant, self.registry))
            case CancelResponse(response_id=rid):
                await self._barge_in(rid or self.active)
            case ClientPresence(connected=connected):
                await self._presence(connected)
            case SessionEnd():
                self._let_go()

    async def _cancel(self, rid: str) -> None:
        self.cancelled.add(rid)
        await self.upstream.cancel(rid)

    async def _barge_in(self, rid: str | None) -> None:
        if rid and rid == self.active and rid not in self.cancelled:
            await self._cancel(rid)
        elif rid:
            self.cancelled.add(rid)  # already over upstream: still, no more of its audio
        # A tool call the user talked over will not be answered into this reply.
        for outcome in self.pending.abandon_all("the user interrupted the reply"):
            await self.upstream.tool_output(outcome.call_id, json.dumps(model_output(outcome)))
        self.want_response = False

    async def _presence(self, connected: bool) -> None:
        now = time.monotonic()
        if not connected:
            self.pending.suspend(now, self.runtime.settings.resume_window_s)
        else:
            for call in self.pending.unanswered(now):
                await self._publish_call(call.call_id, call.spec.name, call.arguments)
        self.wake.set()

    # -- events out ------------------------------------------------------------------------

    async def _pump(self) -> None:
        try:
            async for event in self.upstream.events():
                try:
                    await self._on_event(event)
                except Exception:
                    log.exception("realtime event %s of %s failed", type(event).__name__, self.sid)
        except Exception as exc:  # noqa: BLE001 - whatever ended the upstream ends the session
            log.warning("realtime upstream of %s is gone: %s", self.sid, exc)
            code = exc.code if isinstance(exc, ProviderError) else "provider_unavailable"
            await self._publish({"type": "warning", "code": code,
                                 "message": "the realtime model is unavailable; the session ends"},
                                f"upstream-lost:{uuid.uuid4().hex[:8]}")
            if self.active:
                await self._response_done(self.active, "failed")
            self._let_go()

    async def _on_event(self, event: ev.ServerEvent | Recreated) -> None:
        match event:
            case ev.ResponseStarted(response_id=rid):
                self.active = rid
            case ev.AudioOut(response_id=rid, pcm_24k=pcm) if rid not in self.cancelled:
                await self._audio(rid, pcm)
            case ev.AssistantDelta(response_id=rid, text=text):
                self.text[rid] = self.text.get(rid, "") + text
            case ev.AssistantDone(response_id=rid, text=text) if rid not in self.cancelled:
                self.text[rid] = text
                await self._publish({"type": "response.text", "response_id": rid, "text": text},
                                    f"{rid}:text")
            case ev.UserTranscript(item_id=item, text=text):
                await self._transcript(item, text)
            case ev.FunctionCall() as call:
                await self._tool_call(call)
            case ev.ResponseDone(response_id=rid, status=status):
                await self._response_done(rid, STATUSES.get(status, "failed"))
            case ev.ServerError(code=code, message=message):
                log.warning("realtime error for %s: %s %s", self.sid, code, message[:200])
            case Recreated(reason=reason, lost_response_id=lost):
                log.info("realtime session of %s re-created (%s)", self.sid, reason)
                self.awaiting_transcript.clear()  # replayed as audio: no transcript will come
                if lost:
                    await self._response_done(lost, "failed")

    async def _audio(self, rid: str, pcm_24k: bytes) -> None:
        n = self.audio_sent.get(rid, 0)
        self.audio_sent[rid] = n + 1
        pcm = resample(pcm_24k, ev.RATE_HZ, self.assistant.output_sample_rate)
        await self._publish({"type": "audio.delta", "utterance_id": rid, "response_id": rid,
                             "audio": pcm}, f"{rid}:audio:{n}")

    async def _transcript(self, item_id: str, text: str) -> None:
        utterance = self.awaiting_transcript.popleft() if self.awaiting_transcript else item_id
        await self._publish({"type": "transcript.final", "utterance_id": utterance,
                             "speaker": self.sid, "language": self.assistant.language,
                             "text": text}, f"{utterance}:final")

    async def _response_done(self, rid: str, status: str) -> None:
        if rid in self.cancelled:
            status = "cancelled"
        if self.audio_sent.pop(rid, 0):
            await self._publish({"type": "audio.done", "utterance_id": rid, "response_id": rid},
                                f"{rid}:audio.done")
        await self._publish({"type": "response.done", "response_id": rid, "status": status,
                             "text": self.text.pop(rid, "")}, f"{rid}:done")
        self.cancelled.discard(rid)
        if self.active == rid:
            self.active = None
        await self._maybe_respond()

    # -- tool calls ------------------------------------------------------------------------

    async def _tool_call(self, call: ev.FunctionCall) -> None:
        spec = self.registry.get(call.name)
        if spec is None:
            return await self._to_model(call.call_id, {"error": f"unknown_tool: there is no tool "
                                                                f"named {call.name[:64]}"})
        try:
            arguments = json.loads(call.arguments)
            validate_arguments(spec, arguments)
        except (ValueError, ParleyError) as exc:  # not JSON, or not what the schema asks
            return await self._to_model(call.call_id, {"error": f"invalid_arguments: {exc}"[:600]})
        if call.call_id in self.pending:
            return  # the same call again (a replayed session): it is already out
        self.pending.start(call.call_id, spec, arguments, time.monotonic())
        self.call_responses[call.call_id] = call.response_id
        await self._publish_call(call.call_id, spec.name, arguments)
        self.wake.set()

    async def _publish_call(self, call_id: str, name: str, arguments: dict[str, Any]) -> None:
        n = self.sends.get(call_id, 0)
        self.sends[call_id] = n + 1
        await self._publish({"type": "tool.call", "call_id": call_id, "name": name,
                             "arguments": arguments,
                             "response_id": self.call_responses.get(call_id, "")},
                            f"{call_id}:call:{n}")

    async def _on_answer(self, msg) -> None:
        try:
            answer = decode(msg.data)
            if not isinstance(answer, ToolAnswer):
                raise ValueError("not a tool answer")
        except ValueError as exc:
            await msg.respond(encode(ToolAnswerAck("", False, f"malformed: {exc}"[:200])))
            return
        outcome = self.pending.resolve(answer.call_id, answer.output, time.monotonic(),
                                       error=answer.error)
        if outcome is None:
            await msg.respond(encode(ToolAnswerAck(answer.call_id, False,
                                                   "no such call is waiting (unknown, answered "
                                                   "or timed out)")))
            return
        await msg.respond(encode(ToolAnswerAck(answer.call_id, True)))
        self.wake.set()
        await self._to_model(outcome.call_id, model_output(outcome))

    async def _to_model(self, call_id: str, output: Any) -> None:
        self.call_responses.pop(call_id, None)
        self.sends.pop(call_id, None)
        await self.upstream.tool_output(call_id, json.dumps(output, ensure_ascii=False))
        self.want_response = True
        await self._maybe_respond()

    async def _maybe_respond(self) -> None:
        """The model answers once every output of its calls is in and nothing else speaks."""
        if self.want_response and self.active is None and not len(self.pending):
            self.want_response = False
            await self.upstream.respond()

    async def _watch_deadlines(self) -> None:
        while True:
            self.wake.clear()
            deadline = self.pending.next_deadline()
            wait_s = None if deadline is None else max(0.0, deadline - time.monotonic()) + 0.001
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), wait_s)
            for outcome in self.pending.expired(time.monotonic()):
                log.info("tool call %s of %s: %s", outcome.call_id, self.sid, outcome.error_code)
                await self._to_model(outcome.call_id, model_output(outcome))


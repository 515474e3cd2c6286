"""Runs assistant turns: the I/O around the pure `Turn` state machine.

One `AssistantTurn` work item is one turn. Its inputs — the model's stream, the client's
tool answers (NATS requests on `parley.toolres.<sid>`), barge-in and presence (on
`parley.ctl.<sid>`), webhook answers and the clock — all go through one inbox, so the
`Turn` sees them one at a time. Sentences are published as `response.text` at once and
spoken by a separate task, one TTS request after the other, so audio keeps sentence order
while the model goes on writing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import httpx

from services.tools.llm.history import ConversationStore
from services.tools.llm.provider import LlmProvider
from services.tools.registry import StepBudget, session_registry
from services.tools.turn import (
    AppendHistory,
    CallClientTool,
    CallServerTool,
    ContinueLlm,
    Finish,
    Say,
    Turn,
)
from services.tools.webhooks import WebhookTool, call_webhook
from shared import bus, metrics
from shared.errors import ParleyError
from shared.messages import (
    AssistantTurn,
    CancelResponse,
    ClientPresence,
    ToolAnswer,
    ToolAnswerAck,
    TtsWork,
    decode,
    encode,
)
from shared.worker import Runtime

log = logging.getLogger("parley.tools")

SPEAK_MARGIN_S = 5.0  # a sentence's TTS request may take the provider timeout and this
SPEAKER_SILENT_S = 3 * bus.SPEAKING_BEAT_S  # no beat from the TTS worker for this long: it died
STATUS = {"stop": "completed", "cancelled": "cancelled", "error": "failed", "step_limit": "step_limit"}


def response_id_of(utterance_id: str) -> str:
    """Stable across redelivery, so re-published events are deduplicated."""
    return f"{utterance_id}-r"


@dataclass
class Deps:
    runtime: Runtime
    llm: LlmProvider
    conversations: ConversationStore
    server_tools: list[WebhookTool]
    http: httpx.AsyncClient


class TurnRunner:
    """The work handler; a newer turn of a session ends the older one on this worker."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.running: dict[str, TurnRun] = {}

    async def __call__(self, work: AssistantTurn, msg) -> None:  # msg: the worker acks it
        older = self.running.get(work.sid)
        if older is not None:
            older.inbox.put_nowait(("cancel",))
        run = TurnRun(self.deps, work)
        self.running[work.sid] = run
        try:
            await run.run()
        finally:
            if self.running.get(work.sid) is run:
                del self.running[work.sid]


class TurnRun:
    def __init__(self, deps: Deps, work: AssistantTurn) -> None:
        self.deps, self.work = deps, work
        self.rt = deps.runtime
        self.rid = response_id_of(work.utterance_id)
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.sentences: asyncio.Queue[Say | None] = asyncio.Queue()
        self.said: list[str] = []
        self.sends: dict[str, int] = {}  # call id → times sent (a resend gets a new msg id)
        self.sent_at: dict[str, float] = {}  # call id → when its tool.call last went out
        self.tasks: set[asyncio.Task] = set()
        self.llm_task: asyncio.Task | None = None
        self.turn: Turn | None = None

    # ---- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        w = self.work
        self.registry, problems = session_registry(w.sid, w.assistant.tools,
                                                   [tool.spec for tool in self.deps.server_tools])
        for problem in problems:
            log.warning("session %s: %s", w.sid, problem)
        history = await self.deps.conversations.load(w.sid)
        self.turn = Turn(self.rid, self.registry, StepBudget(), history, w.text, time.monotonic())
        subs = [await self.rt.nc.subscribe(self.rt.subjects.ctl(w.sid), cb=self._on_ctl),
                await self.rt.nc.subscribe(self.rt.subjects.tool_answers(w.sid), cb=self._on_answer)]
        speaker = asyncio.create_task(self._speak_all())
        started = time.perf_counter()
        finish: Finish | None = None
        try:
            finish = await self._execute(self.turn.start())
            while finish is None:
                finish = await self._execute(await self._next_input())
            if finish.reason != "cancelled":
                self.sentences.put_nowait(None)
                finish = await self._until_spoken(speaker, finish)
        finally:
            for sub in subs:
                await sub.unsubscribe()
            for task in [*self.tasks, *([self.llm_task] if self.llm_task else []), speaker]:
                task.cancel()
        await self._finish(finish)
        metrics.STAGE_SECONDS.labels("assistant_turn").observe(time.perf_counter() - started)

    async def _until_spoken(self, speaker: asyncio.Task, finish: Finish) -> Finish:
        """The model is done; the reply may still be spoken, and still be interrupted."""
        while not speaker.done():
            item = asyncio.create_task(self.inbox.get())
            await asyncio.wait({speaker, item}, return_when=asyncio.FIRST_COMPLETED)
            if item.done() and item.result() == ("cancel",):
                return Finish(self.rid, "cancelled")
            item.cancel()  # anything else that comes now has no turn left to change
        return finish

    async def _next_input(self) -> list:
        deadline = self.turn.next_deadline()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            item = await asyncio.wait_for(self.inbox.get(), timeout)
        except (TimeoutError, asyncio.TimeoutError):
            return self.turn.on_tick(time.monotonic())
        now = time.monotonic()
        match item:
            case ("llm", event):
                return self.turn.on_llm_event(event, now)
            case ("llm_failed", reason):
                await self._event({"type": "warning", "code": "provider_unavailable",
                                   "message": f"the assistant's model is unavailable: {reason}"}, "llm-failed")
                return self.turn.on_llm_error(now)
            case ("answer", call_id, output, error):
                if call_id in self.sent_at:  # a client's answer, not a webhook's
                    metrics.STAGE_SECONDS.labels("tool_round_trip").observe(time.perf_counter() - self.sent_at[call_id])
                return self.turn.on_tool_result(call_id, output, error, now)
            case ("cancel",):
                return self.turn.cancel(now)
            case ("presence", False):
                return self.turn.on_client_gone(now, self.rt.settings.resume_window_s)
            case ("presence", True):
                return self.turn.on_client_back(now)
        return []

    async def _execute(self, actions: list) -> Finish | None:
        for action in actions:
            match action:
                case Say():
                    await self._event({"type": "response.text", "response_id": self.rid,
                                       "text": action.text, "index": action.index}, f"text:{action.index}")
                    self.said.append(action.text)
                    self.sentences.put_nowait(action)
                case CallClientTool():
                    await self._send_call(action)
                case CallServerTool():
                    self._spawn(self._call_server(action))
                case ContinueLlm(messages=messages):
                    self._stream_llm(messages)
                case AppendHistory(messages=messages):
                    await self.deps.conversations.append(self.work.sid, *messages)
                case Finish():
                    return action
        return None

    # ---- inputs ------------------------------------------------------------------------------

    async def _on_ctl(self, msg) -> None:
        try:
            control = decode(msg.data)
        except ValueError:
            return
        match control:
            case CancelResponse(response_id=rid) if rid in ("", self.rid):
                self.inbox.put_nowait(("cancel",))
            case ClientPresence(connected=connected):
                self.inbox.put_nowait(("presence", connected))

    async def _on_answer(self, msg) -> None:
        try:
            answer = decode(msg.data)
            if not isinstance(answer, ToolAnswer):
                raise ValueError("not a tool answer")
        except ValueError:
            return
        if not self.turn.is_waiting_for(answer.call_id):
            return  # another turn (or nobody) has it; the edge tells the client if nobody does
        self.inbox.put_nowait(("answer", answer.call_id, answer.output, answer.error))
        await msg.respond(encode(ToolAnswerAck(answer.call_id, accepted=True)))

    def _stream_llm(self, messages: list[dict]) -> None:
        if self.llm_task is not None:
            self.llm_task.cancel()
        tools = self.registry.described()

        async def stream() -> None:
            try:
                async for event in self.deps.llm.stream(messages, tools,
                                                        instructions=self.work.assistant.instructions):
                    self.inbox.put_nowait(("llm", event))
            except ParleyError as exc:
                log.warning("model failed for %s: %s", self.rid, exc)
                self.inbox.put_nowait(("llm_failed", exc.code))

        self.llm_task = asyncio.create_task(stream())

    async def _call_server(self, call: CallServerTool) -> None:
        tool = next(t for t in self.deps.server_tools if t.name == call.name)
        try:
            output, error = await call_webhook(tool, call.call_id, call.arguments, self.deps.http), None
        except ParleyError as exc:
            output, error = None, str(exc)
        self.inbox.put_nowait(("answer", call.call_id, output, error))

    # ---- outputs ----------------------------------------------------------------------------

    async def _event(self, event: dict, key: str) -> None:
        await bus.publish_event(self.rt.js, self.rt.subjects, self.work.sid, event, msg_id=f"{self.rid}:{key}")

    async def _send_call(self, call: CallClientTool) -> None:
        sent = self.sends.get(call.call_id, 0)
        self.sends[call.call_id] = sent + 1
        event = {"type": "tool.call", "call_id": call.call_id, "name": call.name,
                 "arguments": call.arguments, "response_id": self.rid}
        await self._event(event, f"call:{call.call_id}:{sent}")
        self.sent_at[call.call_id] = time.perf_counter()

    async def _speak_all(self) -> None:
        while (say := await self.sentences.get()) is not None:
            await self._speak(say)

    async def _speak(self, say: Say) -> None:
        a, w = self.work.assistant, self.work
        work = TtsWork(self.rid, say.text, a.language, a.output_sample_rate, a.voice, (w.sid,),
                       speaker=w.sid, principal=w.principal, response_id=self.rid, segment=say.index)
        for attempt in range(2):  # a TTS worker that died mid-sentence: another one speaks it
            try:
                await self._ask_to_speak(work)
                return
            except Exception as exc:  # no responders, a silent worker, timeout
                log.warning("speaking sentence %d of %s failed (%s)", say.index, self.rid, exc)
        await self._event({"type": "warning", "code": "provider_unavailable",
                           "message": "speech unavailable for part of the reply"}, f"tts-failed:{say.index}")

    async def _ask_to_speak(self, work: TtsWork) -> None:
        """One sentence to one TTS worker (the queue group picks it), until it is spoken. The
        worker beats while it speaks: silence for SPEAKER_SILENT_S means it died."""
        nc = self.rt.nc
        inbox = nc.new_inbox()
        replies = await nc.subscribe(inbox)
        try:
            await nc.publish(self.rt.subjects.tts_speak, encode(work), reply=inbox,
                             headers={bus.TRACEPARENT: bus.outgoing_traceparent(None)})
            give_up_at = time.monotonic() + self.rt.settings.providers.timeout_s + SPEAK_MARGIN_S
            while True:
                wait_s = min(SPEAKER_SILENT_S, give_up_at - time.monotonic())
                if wait_s <= 0:
                    raise TimeoutError("the sentence took longer than the provider timeout")
                reply = await replies.next_msg(timeout=wait_s)  # nats TimeoutError: a silent worker
                headers = reply.headers or {}
                if headers.get("Status") == "503":
                    raise RuntimeError("no TTS worker is listening")
                if not headers.get(bus.SPEAKING_HEADER):
                    return
        finally:
            await replies.unsubscribe()

    async def _finish(self, finish: Finish | None) -> None:
        reason = finish.reason if finish else "error"
        if self.said and reason != "cancelled":
            await self._event({"type": "audio.done", "utterance_id": self.rid, "response_id": self.rid}, "done")
        await self._event({"type": "response.done", "response_id": self.rid, "status": STATUS[reason],
                           "text": " ".join(self.said)}, "response-done")
        metrics.WORK_DONE.labels("tools").inc()

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

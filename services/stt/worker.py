"""STT worker: claims sessions, recognises their audio, emits transcripts and translate work.

Ownership: the edge asks `parley.stt.claim` (a queue group, so one worker answers); the
owner subscribes to the session's audio and control subjects and renews a lease on
`parley.stt.lease.<sid>` so the edge can re-claim elsewhere when the owner dies.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from nats.micro.service import EndpointConfig, Request, Service

from services.stt import engines
from services.stt.provider import SttEngine, SttSession
from services.stt.routing import translate_work
from shared import bus, metrics, telemetry
from shared.audio import resample
from shared.audio_owner import AudioIntake, Lease
from shared.config import Settings
from shared.cost import CostLedger, PriceTable
from shared.fallback import served_by
from shared.http_clients import HttpClients
from shared.messages import (
    AssistantTurn,
    AssistantUpdate,
    AudioChunk,
    Capabilities,
    RouteUpdate,
    SessionEnd,
    SttClaim,
    SttClaimed,
    decode,
    encode,
)
from shared.reporting import Reporter
from shared.usage import Usage, metering
from shared.worker import Runtime, run_worker

log = logging.getLogger("parley.stt")


class OwnedSession:
    """One claimed session: its recogniser, its route, and the ordered chunk queue."""

    def __init__(self, runtime: Runtime, engine: SttEngine, claim: SttClaim, worker_id: str, release,
                 reporter: Reporter):
        self.runtime = runtime
        self.engine = engine
        self.sid = claim.sid
        self.language = claim.language
        self.principal = claim.principal
        self.route = claim.route
        self.assistant = claim.assistant  # set: finals are questions for the assistant
        self.worker_id = worker_id
        self.recogniser: SttSession = engine.open(claim.language)
        self.intake = AudioIntake(runtime, claim.sid, "stt")
        self.lease = Lease(runtime, claim.sid, worker_id)
        self.subs: list = []
        self.tasks: list[asyncio.Task] = []
        self.release = release  # async (sid) -> None: drop this session from the worker
        self.reporter = reporter
        self.usage: list[Usage] = []  # of the utterance in progress, reported with its final

    async def start(self) -> None:
        subjects = self.runtime.subjects
        self.subs.append(await self.runtime.nc.subscribe(subjects.audio(self.sid), cb=self.intake.on_audio))
        self.subs.append(await self.runtime.nc.subscribe(subjects.ctl(self.sid), cb=self._on_ctl))
        self.tasks.append(asyncio.create_task(self._recognise()))
        self.tasks.append(asyncio.create_task(self.lease.keep(self.intake, self._let_go)))

    async def close(self) -> None:
        for sub in self.subs:
            await sub.unsubscribe()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        with metering() as meter:  # a streaming vendor bills the open session: known at close
            await self.recogniser.close()
        last = self.intake.last_utterance or f"{self.sid}-closed"
        await self.reporter.usage(self.sid, self.principal, last, self.usage + meter.records, "stt:close")

    async def _on_ctl(self, msg) -> None:
        try:
            control = decode(msg.data)
        except ValueError:
            return
        match control:
            case RouteUpdate(route=route):
                self.route = route
            case AssistantUpdate(assistant=assistant):
                self.assistant = assistant
            case SessionEnd():
                self._let_go()

    def _let_go(self) -> None:
        # Not awaited: releasing unsubscribes the very callback (or cancels the task) that
        # asks for it, which would cancel us before the provider stream is terminated.
        self._releasing = asyncio.create_task(self.release(self.sid))

    async def _recognise(self) -> None:
        while True:
            chunk = await self.intake.next_chunk()
            try:
                await self._process(chunk)
            except Exception:
                log.exception("recognition failed for %s", chunk.utterance_id)

    async def _process(self, chunk: AudioChunk) -> None:
        started = time.perf_counter()
        pcm = resample(chunk.pcm, chunk.sample_rate, self.engine.sample_rate)
        with metering() as meter:
            partial = await self.recogniser.feed(pcm)
            if chunk.last:
                text = (await self.recogniser.finish()).strip()
            served = served_by()
        self.usage += meter.records
        await self.reporter.served(served, [self.sid], chunk.utterance_id)
        if partial and not chunk.last:
            await self._captions({"type": "transcript.partial", "text": partial}, chunk, None)
        if chunk.last:
            metrics.STAGE_SECONDS.labels("stt_finalize").observe(time.perf_counter() - started)
            await self._finalize(chunk, text)
            usage, self.usage = self.usage, []
            await self.reporter.usage(self.sid, self.principal, chunk.utterance_id, usage, "stt")
            await self.lease.finish(chunk.utterance_id)

    async def _captions(self, event: dict, chunk: AudioChunk, msg_id: str | None) -> None:
        event = {**event, "utterance_id": chunk.utterance_id, "speaker": self.sid}
        for sid in self.route.captions_to:
            await bus.publish_event(
                self.runtime.js, self.runtime.subjects, sid, event,
                msg_id=f"{msg_id}:{sid}" if msg_id else None,
            )

    async def _finalize(self, chunk: AudioChunk, text: str) -> None:
        ended = self.intake.ended_at.pop(chunk.utterance_id, None)
        if not text:
            return  # noise, not speech: nothing to caption or translate
        with telemetry.span("stt", None, sid=self.sid, utterance_id=chunk.utterance_id):  # a trace per utterance
            final = {"type": "transcript.final", "language": self.language, "text": text}
            await self._captions(final, chunk, f"{chunk.utterance_id}:final")
            if ended is not None:
                metrics.STAGE_SECONDS.labels("chunk_to_transcript").observe(time.perf_counter() - ended)
            if self.assistant is not None:
                turn = AssistantTurn(self.sid, chunk.utterance_id, text, self.assistant, self.principal)
                await self._publish_work("tools", turn, f"{chunk.utterance_id}:assistant")
            for work in translate_work(self.route, self.sid, chunk.utterance_id, text, self.language, self.principal):
                await self._publish_work("translate", work, f"{work.utterance_id}:translate:{work.target_language}")
        metrics.WORK_DONE.labels("stt").inc()

    async def _publish_work(self, kind: str, work, msg_id: str) -> None:
        settings = self.runtime.settings
        deadline_s = settings.turn_deadline_s if kind == "tools" else settings.work_deadline_s
        headers = bus.work_headers(None, deadline_s, msg_id)
        await bus.publish_durable(self.runtime.js, self.runtime.subjects.work(kind), encode(work), headers)


class OwnedSessions:
    """The sessions this worker owns; claiming one it already owns just refreshes its route."""

    def __init__(self, engine: SttEngine, worker_id: str) -> None:
        self.engine = engine
        self.worker_id = worker_id
        self.by_sid: dict[str, OwnedSession] = {}
        self.reporter: Reporter | None = None  # set once the worker is connected

    async def claim(self, runtime: Runtime, claim: SttClaim) -> SttClaimed:
        session = self.by_sid.get(claim.sid)
        if session is None:
            session = OwnedSession(runtime, self.engine, claim, self.worker_id, self.release, self.reporter)
            await session.start()
            self.by_sid[claim.sid] = session
        session.route, session.assistant = claim.route, claim.assistant
        return SttClaimed(claim.sid, self.worker_id, runtime.settings.stt_lease_s)

    async def release(self, sid: str) -> None:
        session = self.by_sid.pop(sid, None)
        if session:
            await session.close()
            self.reporter.forget(sid)

    async def close_all(self) -> None:
        for sid in list(self.by_sid):
            await self.release(sid)


def _claim_endpoint(sessions: OwnedSessions, prices: PriceTable):
    async def add(service: Service, runtime: Runtime) -> None:
        async def on_claim(request: Request) -> None:
            try:
                claim = decode(request.data)
                if not isinstance(claim, SttClaim):
                    raise ValueError("not a claim")
            except ValueError as exc:
                await request.respond_error("400", str(exc))
                return
            await request.respond(encode(await sessions.claim(runtime, claim)))

        ledger = CostLedger(runtime.settings.redis_url, prices=prices, prefix=runtime.settings.prefix)
        sessions.reporter = Reporter(runtime.js, runtime.subjects, ledger)
        await service.add_endpoint(
            EndpointConfig(name="claim", subject=runtime.subjects.stt_claim, handler=on_claim)
        )
        runtime.closers += [sessions.close_all, ledger.close]

    return add


async def main(settings: Settings) -> None:
    http = HttpClients(settings.providers.timeout_s)
    engine = engines.build(settings, http)
    await engine.warm_up()
    caps = Capabilities(kind="stt", languages=tuple(sorted(engine.languages)))
    sessions = OwnedSessions(engine, f"stt-{uuid.uuid4().hex[:8]}")

    async def start(runtime: Runtime) -> None:
        return None

    prices = PriceTable.load(settings.providers.prices_path)
    await run_worker("stt", settings, caps, start, _claim_endpoint(sessions, prices))
    await http.aclose()

"""TTS worker: speaks one text to its recipients as audio.delta … audio.done.

Translations arrive as JetStream work. Sentences of an assistant reply arrive as requests on
`parley.tts.speak` (a queue group): the turn runner awaits each one, so a reply's audio stays
in sentence order, and a `CancelResponse` on the session's ctl subject stops it mid-sentence.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.micro.service import EndpointConfig, Request, Service

from services.tts import engines
from services.tts.provider import Synthesizer
from shared import bus, metrics, telemetry
from shared.config import Settings
from shared.cost import CostLedger, PriceTable
from shared.errors import ParleyError
from shared.fallback import served_by
from shared.http_clients import HttpClients
from shared.messages import CancelResponse, Capabilities, TtsWork, decode
from shared.reporting import Reporter
from shared.usage import metering
from shared.worker import Runtime, consume_work, run_worker

log = logging.getLogger("parley.tts")

CONCURRENCY = 16


class TtsHandler:
    def __init__(self, runtime: Runtime, synthesizer: Synthesizer, reporter: Reporter) -> None:
        self.runtime = runtime
        self.synthesizer = synthesizer
        self.reporter = reporter

    async def _publish(self, work: TtsWork, event: dict, key: str, trace: str | None) -> None:
        # Message ids are stable across redelivery: a re-synthesis after a crash lands once.
        tag = f"{work.utterance_id}:{work.segment}:{key}:{work.language}:{work.voice}:{work.sample_rate}"
        if work.response_id:
            event = {**event, "response_id": work.response_id}
        for sid in work.recipients:
            await bus.publish_event(
                self.runtime.js, self.runtime.subjects, sid, event,
                msg_id=f"{tag}:{sid}", traceparent=trace,
            )

    async def __call__(self, work: TtsWork, msg) -> None:
        trace = (msg.headers or {}).get(bus.TRACEPARENT) if msg is not None else None
        started = time.perf_counter()
        index = 0
        with metering() as meter:
            try:
                async for pcm in self.synthesizer.synthesize(work.text, work.language, work.voice, work.sample_rate):
                    if index == 0:
                        metrics.STAGE_SECONDS.labels("tts_first_audio").observe(time.perf_counter() - started)
                        if msg is not None:  # queued work: from the translation on
                            metrics.STAGE_SECONDS.labels("translation_to_first_audio").observe(
                                metrics.since_stored(msg))
                        await self.reporter.served(served_by(), work.recipients, work.utterance_id)
                    event = {"type": "audio.delta", "utterance_id": work.utterance_id, "audio": pcm}
                    await self._publish(work, event, f"audio{index}", trace)
                    index += 1
            except ParleyError as exc:
                log.warning("speech for %s failed: %s", work.utterance_id, exc)
                warning = {"type": "warning", "code": exc.code, "message": f"speech unavailable: {exc}"}
                await self._publish(work, warning, "tts-warning", trace)
        if work.speaker:  # before audio.done: the utterance's events are complete at done
            tag = f"tts:{work.segment}:{work.language}:{work.voice}:{work.sample_rate}"
            await self.reporter.usage(work.speaker, work.principal, work.utterance_id, meter.records, tag)
        if not work.response_id:  # a reply's sentences end with one audio.done from its runner
            done = {"type": "audio.done", "utterance_id": work.utterance_id}
            await self._publish(work, done, "done", trace)
        metrics.WORK_DONE.labels("tts").inc()


def _speak_endpoint(handler: TtsHandler):
    async def add(service: Service, runtime: Runtime) -> None:
        # An endpoint's handler runs one request at a time; each sentence gets a task of its
        # own so one slow voice never holds up other sessions' replies.
        slots = asyncio.Semaphore(CONCURRENCY)
        speaking: set[asyncio.Task] = set()

        async def speak(request: Request, work: TtsWork) -> None:
            parent = (request.headers or {}).get(bus.TRACEPARENT)
            beating = asyncio.create_task(_still_speaking(request))
            try:
                with telemetry.span("tts.speak", parent, sid=work.recipients[0], utterance_id=work.utterance_id):
                    async with slots:
                        cancelled = await _cancellable(runtime, work, handler(work, None))
            finally:
                beating.cancel()
            await request.respond(b"cancelled" if cancelled else b"done")

        async def on_speak(request: Request) -> None:
            try:
                work = decode(request.data)
                if not isinstance(work, TtsWork) or not work.recipients:
                    raise ValueError("not speech work")
            except ValueError as exc:
                await request.respond_error("400", str(exc))
                return
            task = asyncio.create_task(speak(request, work))
            speaking.add(task)
            task.add_done_callback(speaking.discard)

        async def finish_speaking() -> None:  # on drain: sentences in progress end first
            if speaking:
                await asyncio.wait(speaking, timeout=runtime.settings.providers.timeout_s)

        await service.add_endpoint(
            EndpointConfig(name="speak", subject=runtime.subjects.tts_speak, handler=on_speak)
        )
        runtime.closers.insert(0, finish_speaking)

    return add


async def _still_speaking(request: Request) -> None:
    """Tell the turn runner, every beat, that this worker is alive and on its sentence."""
    while True:
        await asyncio.sleep(bus.SPEAKING_BEAT_S)
        try:
            await request.respond(b"", headers={bus.SPEAKING_HEADER: "1"})
        except Exception:  # reconnecting: the next beat tries again
            pass


async def _cancellable(runtime: Runtime, work: TtsWork, speaking) -> bool:
    """Run `speaking` until it ends or a CancelResponse for its reply arrives; True if cut."""
    task = asyncio.create_task(speaking)

    async def on_ctl(msg) -> None:
        try:
            control = decode(msg.data)
        except ValueError:
            return
        if isinstance(control, CancelResponse) and control.response_id in ("", work.response_id):
            task.cancel()

    sub = await runtime.nc.subscribe(runtime.subjects.ctl(work.recipients[0]), cb=on_ctl)
    try:
        await task
        return False
    except asyncio.CancelledError:
        if not task.cancelled():
            raise  # we are being cancelled ourselves
        return True
    finally:
        await sub.unsubscribe()


async def main(settings: Settings) -> None:
    http = HttpClients(settings.providers.timeout_s)
    synthesizer = engines.build(settings, http)
    caps = Capabilities(kind="tts", languages=tuple(sorted(synthesizer.languages)))
    prices = PriceTable.load(settings.providers.prices_path)

    handlers: list[TtsHandler] = []  # made at start; the speak endpoint is added after

    async def start(runtime: Runtime) -> None:
        ledger = CostLedger(settings.redis_url, prices=prices, prefix=settings.prefix)
        handler = TtsHandler(runtime, synthesizer, Reporter(runtime.js, runtime.subjects, ledger))
        handlers.append(handler)
        runtime.tasks.append(asyncio.create_task(consume_work(runtime, "tts", handler, CONCURRENCY)))
        runtime.closers += [synthesizer.close, ledger.close, http.aclose]

    async def add_speak(service: Service, runtime: Runtime) -> None:
        await _speak_endpoint(handlers[0])(service, runtime)

    await run_worker("tts", settings, caps, start, add_speak)

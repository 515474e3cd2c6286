"""TTS worker: speaks one translated text to its recipients as audio.delta … audio.done."""

from __future__ import annotations

import asyncio
import logging
import time

from services.tts import engines
from services.tts.provider import Synthesizer
from shared import bus, metrics
from shared.config import Settings
from shared.cost import CostLedger, PriceTable
from shared.errors import ParleyError
from shared.fallback import served_by
from shared.http_clients import HttpClients
from shared.messages import Capabilities, TtsWork
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
        tag = f"{work.utterance_id}:{key}:{work.language}:{work.voice}:{work.sample_rate}"
        for sid in work.recipients:
            await bus.publish_event(
                self.runtime.js, self.runtime.subjects, sid, event,
                msg_id=f"{tag}:{sid}", traceparent=trace,
            )

    async def __call__(self, work: TtsWork, msg) -> None:
        trace = (msg.headers or {}).get(bus.TRACEPARENT)
        started = time.perf_counter()
        index = 0
        with metering() as meter:
            try:
                async for pcm in self.synthesizer.synthesize(work.text, work.language, work.voice, work.sample_rate):
                    if index == 0:
                        metrics.STAGE_SECONDS.labels("tts_first_audio").observe(time.perf_counter() - started)
                        await self.reporter.served(served_by(), work.recipients, work.utterance_id)
                    event = {"type": "audio.delta", "utterance_id": work.utterance_id, "audio": pcm}
                    await self._publish(work, event, f"audio{index}", trace)
                    index += 1
            except ParleyError as exc:
                log.warning("speech for %s failed: %s", work.utterance_id, exc)
                warning = {"type": "warning", "code": exc.code, "message": f"speech unavailable: {exc}"}
                await self._publish(work, warning, "tts-warning", trace)
        if work.speaker:  # before audio.done: the utterance's events are complete at done
            tag = f"tts:{work.language}:{work.voice}:{work.sample_rate}"
            await self.reporter.usage(work.speaker, work.principal, work.utterance_id, meter.records, tag)
        done = {"type": "audio.done", "utterance_id": work.utterance_id}
        await self._publish(work, done, "done", trace)
        metrics.WORK_DONE.labels("tts").inc()


async def main(settings: Settings) -> None:
    http = HttpClients(settings.providers.timeout_s)
    synthesizer = engines.build(settings, http)
    caps = Capabilities(kind="tts", languages=tuple(sorted(synthesizer.languages)))
    prices = PriceTable.load(settings.providers.prices_path)

    async def start(runtime: Runtime) -> None:
        ledger = CostLedger(settings.redis_url, prices=prices, prefix=settings.prefix)
        handler = TtsHandler(runtime, synthesizer, Reporter(runtime.js, runtime.subjects, ledger))
        runtime.tasks.append(asyncio.create_task(consume_work(runtime, "tts", handler, CONCURRENCY)))
        runtime.closers += [synthesizer.close, ledger.close, http.aclose]

    await run_worker("tts", settings, caps, start)

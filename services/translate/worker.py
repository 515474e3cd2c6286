"""Translate worker: one final transcript → one target language → captions + speech work."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from services.translate import engines
from services.translate.provider import Translator
from shared import bus, metrics
from shared.cache import TranslationCache
from shared.config import Settings
from shared.cost import CostLedger, PriceTable
from shared.errors import ParleyError
from shared.fallback import served_by
from shared.http_clients import HttpClients
from shared.messages import Capabilities, Listener, TranslateWork, TtsWork, encode
from shared.reporting import Reporter
from shared.usage import metering
from shared.worker import Runtime, consume_work, run_worker

log = logging.getLogger("parley.translate")

CONCURRENCY = 16


def tts_work(work: TranslateWork, text: str) -> list[TtsWork]:
    """Listeners sharing voice and rate share one synthesis."""
    groups: dict[tuple[str | None, int], list[Listener]] = defaultdict(list)
    for listener in work.listeners:
        groups[(listener.voice, listener.output_sample_rate)].append(listener)
    return [
        TtsWork(
            utterance_id=work.utterance_id,
            text=text,
            language=work.target_language,
            sample_rate=rate,
            voice=voice,
            recipients=tuple(listener.sid for listener in listeners),
            speaker=work.speaker,
            principal=work.principal,
        )
        for (voice, rate), listeners in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))
    ]


class TranslateHandler:
    def __init__(self, runtime: Runtime, translator: Translator, cache: TranslationCache,
                 reporter: Reporter, cache_engine: str) -> None:
        self.runtime = runtime
        self.translator = translator
        self.cache = cache
        self.reporter = reporter
        self.cache_engine = cache_engine  # the preferred provider: its translations are cached

    async def __call__(self, work: TranslateWork, msg) -> None:
        started = time.perf_counter()
        try:
            text = await self._translate(work)
        except ParleyError as exc:
            await self._warn(work, exc)
            return
        metrics.STAGE_SECONDS.labels("translate").observe(time.perf_counter() - started)
        trace = (msg.headers or {}).get(bus.TRACEPARENT)
        event = {
            "type": "translation",
            "utterance_id": work.utterance_id,
            "speaker": work.speaker,
            "source_language": work.source_language,
            "target_language": work.target_language,
            "text": text,
        }
        for listener in work.listeners:
            await bus.publish_event(
                self.runtime.js, self.runtime.subjects, listener.sid, event,
                msg_id=f"{work.utterance_id}:translation:{listener.sid}", traceparent=trace,
            )
        metrics.STAGE_SECONDS.labels("transcript_to_translation").observe(metrics.since_stored(msg))
        for item in tts_work(work, text):
            msg_id = f"{item.utterance_id}:tts:{item.language}:{item.voice}:{item.sample_rate}"
            headers = bus.work_headers(trace, self.runtime.settings.work_deadline_s, msg_id)
            await bus.publish_durable(self.runtime.js, self.runtime.subjects.work("tts"), encode(item), headers)
        metrics.WORK_DONE.labels("translate").inc()

    async def _translate(self, work: TranslateWork) -> str:
        pair = (work.source_language, work.target_language)
        cached = await self.cache.get(work.text, *pair, self.cache_engine)
        if cached is not None:
            return cached
        with metering() as meter:
            text = await self.translator.translate(work.text, *pair)
            served = served_by()
        if served is None or not served.fallback:  # fallback-quality text is not kept
            await self.cache.put(work.text, *pair, self.cache_engine, text)
        listeners = [listener.sid for listener in work.listeners]
        await self.reporter.served(served, listeners, work.utterance_id)
        tag = f"translate:{work.target_language}"
        await self.reporter.usage(work.speaker, work.principal, work.utterance_id, meter.records, tag)
        return text

    async def _warn(self, work: TranslateWork, exc: ParleyError) -> None:
        log.warning("translation %s→%s failed: %s", work.source_language, work.target_language, exc)
        event = {"type": "warning", "code": exc.code, "message": f"translation unavailable: {exc}"}
        for listener in work.listeners:
            await bus.publish_event(
                self.runtime.js, self.runtime.subjects, listener.sid, event,
                msg_id=f"{work.utterance_id}:translate-warning:{listener.sid}",
            )


async def main(settings: Settings) -> None:
    http = HttpClients(settings.providers.timeout_s)
    translator = engines.build(settings, http)
    await translator.warm_up()
    caps = Capabilities(kind="translate", pairs=tuple(sorted(translator.pairs())))
    prices = PriceTable.load(settings.providers.prices_path)

    async def start(runtime: Runtime) -> None:
        cache = TranslationCache(settings.redis_url, ttl_s=settings.providers.translation_cache_ttl_s,
                                 prefix=settings.prefix)
        ledger = CostLedger(settings.redis_url, prices=prices, prefix=settings.prefix)
        reporter = Reporter(runtime.js, runtime.subjects, ledger)
        preferred = settings.providers.chain("translate")[0] if settings.engines == "local" else "bench"
        handler = TranslateHandler(runtime, translator, cache, reporter, preferred)
        runtime.tasks.append(asyncio.create_task(consume_work(runtime, "translate", handler, CONCURRENCY)))
        runtime.closers += [translator.close, cache.close, ledger.close, http.aclose]

    await run_worker("translate", settings, caps, start)

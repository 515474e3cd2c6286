"""Translate worker: one final transcript → one target language → captions + speech work."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, defaultdict

from services.translate import engines
from services.translate.provider import Translator
from shared import bus, metrics
from shared.config import Settings
from shared.errors import ParleyError
from shared.messages import Capabilities, Listener, TranslateWork, TtsWork, encode
from shared.worker import Runtime, consume_work, run_worker

log = logging.getLogger("parley.translate")

CONCURRENCY = 16


class LruCache:
    """Frequent phrases repeat in conversation; a small process-memory cache skips the engine."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._items: OrderedDict[tuple, str] = OrderedDict()

    def get(self, key: tuple) -> str | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: tuple, value: str) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


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
        )
        for (voice, rate), listeners in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))
    ]


class TranslateHandler:
    def __init__(self, runtime: Runtime, translator: Translator) -> None:
        self.runtime = runtime
        self.translator = translator
        self.cache = LruCache()

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
        for item in tts_work(work, text):
            msg_id = f"{item.utterance_id}:tts:{item.language}:{item.voice}:{item.sample_rate}"
            headers = bus.work_headers(trace, self.runtime.settings.work_deadline_s, msg_id)
            await self.runtime.js.publish(self.runtime.subjects.work("tts"), encode(item), headers=headers)
        metrics.WORK_DONE.labels("translate").inc()

    async def _translate(self, work: TranslateWork) -> str:
        key = (self.translator.name, work.source_language, work.target_language, " ".join(work.text.lower().split()))
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        text = await self.translator.translate(work.text, work.source_language, work.target_language)
        self.cache.put(key, text)
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
    translator = engines.build(settings.engines, settings.bench)
    await translator.warm_up()
    caps = Capabilities(kind="translate", pairs=tuple(sorted(translator.pairs())))

    async def start(runtime: Runtime) -> None:
        handler = TranslateHandler(runtime, translator)
        runtime.tasks.append(asyncio.create_task(consume_work(runtime, "translate", handler, CONCURRENCY)))
        runtime.closers.append(translator.close)

    await run_worker("translate", settings, caps, start)


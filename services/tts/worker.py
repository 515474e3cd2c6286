"""TTS worker: speaks one translated text to its recipients as audio.delta … audio.done."""

from __future__ import annotations

import asyncio
import logging
import time

from services.tts import engines
from services.tts.provider import Synthesizer
from shared import bus, metrics
from shared.config import Settings
from shared.errors import ParleyError
from shared.messages import Capabilities, TtsWork
from shared.worker import Runtime, consume_work, run_worker

log = logging.getLogger("parley.tts")

CONCURRENCY = 16


class TtsHandler:
    def __init__(self, runtime: Runtime, synthesizer: Synthesizer) -> None:
        self.runtime = runtime
        self.synthesizer = synthesizer

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
        try:
            async for pcm in self.synthesizer.synthesize(work.text, work.language, work.voice, work.sample_rate):
                if index == 0:
                    metrics.STAGE_SECONDS.labels("tts_first_audio").observe(time.perf_counter() - started)
                event = {"type": "audio.delta", "utterance_id": work.utterance_id, "audio": pcm}
                await self._publish(work, event, f"audio{index}", trace)
                index += 1
        except ParleyError as exc:
            log.warning("speech for %s failed: %s", work.utterance_id, exc)
            warning = {"type": "warning", "code": exc.code, "message": f"speech unavailable: {exc}"}
            await self._publish(work, warning, "tts-warning", trace)
        done = {"type": "audio.done", "utterance_id": work.utterance_id}
        await self._publish(work, done, "done", trace)
        metrics.WORK_DONE.labels("tts").inc()


async def main(settings: Settings) -> None:
    synthesizer = engines.build(settings.engines, settings.bench)
    caps = Capabilities(kind="tts", languages=tuple(sorted(synthesizer.languages)))

    async def start(runtime: Runtime) -> None:
        handler = TtsHandler(runtime, synthesizer)
        runtime.tasks.append(asyncio.create_task(consume_work(runtime, "tts", handler, CONCURRENCY)))
        runtime.closers.append(synthesizer.close)

    await run_worker("tts", settings, caps, start)

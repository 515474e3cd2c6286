"""Benchmark STT (DESIGN.md "Benchmark engines"): costs almost nothing.

The edge's energy endpointing decides where an utterance ends; this engine hears nothing
and names each utterance `utterance <n>` (n = 1, 2, … per session), after an optional
delay that stands in for a real engine's finalisation time.
"""

from __future__ import annotations

import asyncio

from shared.errors import ProviderError

# Every language the benchmark engines accept: the primary tags of espeak-ng's voices plus
# other common ones, so any session configuration of a benchmark run is served. The bench
# translator and synthesizer use the same set.
BENCH_LANGUAGES = frozenset(
    """af am an ar as az ba be bg bn bpy bs ca ceb chr cmn co cs cv cy da de el en eo es et
    eu fa fi fil fo fr fy ga gd gl gn grc gu ha hak haw hbs he hi hmn hr ht hu hy hyw ia id
    ig io is it ja jbo jv ka kaa kk kl km kn ko kok ku ky la lb lfn lo lt ltg lv mg mi mk ml
    mn mr ms mt mto my nb nci ne nl no nog ny om or pa pap piqd pl ps pt py qdb qu quc qya ro
    ru rw sd sh shn si sjn sk sl sm smj sn so sq sr st su sv sw ta te tg th ti tk tl tn tr
    tt ug uk ur uz vi xex xh yi yo yue zh zu""".split()
)


def primary_tag(language: str) -> str:
    return language.split("-")[0].split("_")[0].lower()


async def bench_delay(delay_ms: float) -> None:
    if delay_ms > 0:  # no sleep(0): at zero delay the engine must not even yield
        await asyncio.sleep(delay_ms / 1000)


class BenchSttSession:
    def __init__(self, delay_ms: float) -> None:
        self._delay_ms = delay_ms
        self._utterances = 0

    async def feed(self, pcm: bytes) -> str | None:
        return None

    async def finish(self) -> str:
        self._utterances += 1
        await bench_delay(self._delay_ms)
        return f"utterance {self._utterances}"

    async def close(self) -> None:
        """Nothing held."""


class BenchSttEngine:
    name = "bench"
    sample_rate = 16000
    languages = BENCH_LANGUAGES

    def __init__(self, delay_ms: float = 0.0) -> None:
        self.delay_ms = delay_ms

    def open(self, language: str) -> BenchSttSession:
        if primary_tag(language) not in self.languages:
            raise ProviderError(f"bench STT does not know {language!r}")
        return BenchSttSession(self.delay_ms)

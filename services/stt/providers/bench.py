"""Benchmark STT (DESIGN.md "Benchmark engines"): costs almost nothing.

The edge's energy endpointing decides where an utterance ends; this engine hears nothing
and names each utterance `utterance <n>` (n = 1, 2, … per session), after an optional
delay that stands in for a real engine's finalisation time.
"""

from __future__ import annotations

from shared.errors import ProviderError
from shared.languages import BENCH_LANGUAGES, bench_delay, primary_tag


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

    async def warm_up(self) -> None:
        """Nothing to load."""

    def open(self, language: str) -> BenchSttSession:
        if primary_tag(language) not in self.languages:
            raise ProviderError(f"bench STT does not know {language!r}")
        return BenchSttSession(self.delay_ms)

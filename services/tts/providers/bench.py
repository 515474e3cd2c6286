"""Benchmark synthesizer (DESIGN.md "Benchmark engines"): 500 ms of 440 Hz per text."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import lru_cache

from shared.audio import tone
from shared.errors import ProviderError
from shared.languages import BENCH_LANGUAGES, bench_delay, primary_tag

TONE_HZ = 440.0
TONE_S = 0.5


@lru_cache(maxsize=8)
def _tone(sample_rate: int) -> bytes:
    return tone(TONE_HZ, TONE_S, sample_rate)  # cached: the same few rates all run long


class BenchSynthesizer:
    """Exactly one chunk per (non-blank) text, first and only, after `delay_ms`."""

    name = "bench"
    languages = BENCH_LANGUAGES

    def __init__(self, delay_ms: float = 0.0) -> None:
        self.delay_ms = delay_ms

    async def synthesize(
        self, text: str, language: str, voice: str | None, sample_rate: int
    ) -> AsyncIterator[bytes]:
        if primary_tag(language) not in self.languages:
            raise ProviderError(f"bench synthesizer does not know {language!r}")
        if sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        if not text.strip():
            return
        await bench_delay(self.delay_ms)
        yield _tone(sample_rate)

    async def close(self) -> None:
        """Nothing held."""

"""Which synthesizer each engine set ("local", "bench") uses: an explicit registry.

Factories import their engine lazily, so a benchmark worker never loads libespeak-ng.
"""

from __future__ import annotations

from collections.abc import Callable

from services.tts.provider import Synthesizer
from shared.config import BenchDelays


def _local(bench: BenchDelays) -> Synthesizer:
    from services.tts.providers.espeak import EspeakSynthesizer

    return EspeakSynthesizer()


def _bench(bench: BenchDelays) -> Synthesizer:
    from services.tts.providers.bench import BenchSynthesizer

    return BenchSynthesizer(delay_ms=bench.tts_ms)


ENGINES: dict[str, Callable[[BenchDelays], Synthesizer]] = {"local": _local, "bench": _bench}


def build(engines: str, bench: BenchDelays) -> Synthesizer:
    return ENGINES[engines](bench)  # Settings has already checked the name

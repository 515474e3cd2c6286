"""Which STT engine each engine set ("local", "bench") uses: an explicit registry.

Factories import their engine lazily, so a benchmark worker never loads pocketsphinx.
"""

from __future__ import annotations

from collections.abc import Callable

from services.stt.provider import SttEngine
from shared.config import BenchDelays


def _local(bench: BenchDelays) -> SttEngine:
    from services.stt.providers.pocketsphinx import PocketsphinxEngine

    return PocketsphinxEngine()


def _bench(bench: BenchDelays) -> SttEngine:
    from services.stt.providers.bench import BenchSttEngine

    return BenchSttEngine(delay_ms=bench.stt_ms)


ENGINES: dict[str, Callable[[BenchDelays], SttEngine]] = {"local": _local, "bench": _bench}


def build(engines: str, bench: BenchDelays) -> SttEngine:
    return ENGINES[engines](bench)  # Settings has already checked the name

"""Which translator each engine set ("local", "bench") uses: an explicit registry.

Factories import their engine lazily, so a benchmark worker never touches Apertium.
"""

from __future__ import annotations

from collections.abc import Callable

from services.translate.provider import Translator
from shared.config import BenchDelays


def _local(bench: BenchDelays) -> Translator:
    from services.translate.providers.apertium import ApertiumTranslator

    return ApertiumTranslator()


def _bench(bench: BenchDelays) -> Translator:
    from services.translate.providers.bench import BenchTranslator

    return BenchTranslator(delay_ms=bench.translate_ms)


ENGINES: dict[str, Callable[[BenchDelays], Translator]] = {"local": _local, "bench": _bench}


def build(engines: str, bench: BenchDelays) -> Translator:
    return ENGINES[engines](bench)  # Settings has already checked the name

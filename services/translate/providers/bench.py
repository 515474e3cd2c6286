"""Benchmark translator (DESIGN.md "Benchmark engines"): `"[<target>] " + text`."""

from __future__ import annotations

from shared.errors import ProviderError
from shared.languages import ANY, BENCH_LANGUAGES, bench_delay, primary_tag


class BenchTranslator:
    """Any (source, target) pair of distinct benchmark languages, after `delay_ms`."""

    name = "bench"

    def __init__(self, delay_ms: float = 0.0) -> None:
        self.delay_ms = delay_ms

    def pairs(self) -> frozenset[tuple[str, str]]:
        return frozenset({(ANY, ANY)})  # capabilities as data, without 16,000 pairs

    async def translate(self, text: str, source: str, target: str) -> str:
        source, target = primary_tag(source), primary_tag(target)
        if source == target or not {source, target} <= BENCH_LANGUAGES:
            raise ProviderError(f"bench translator has no {source}→{target} pair")
        await bench_delay(self.delay_ms)
        return f"[{target}] {text}"

    async def warm_up(self) -> None:
        """Nothing to load."""

    async def close(self) -> None:
        """Nothing held."""

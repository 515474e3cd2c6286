"""Benchmark translator (DESIGN.md "Benchmark engines"): `"[<target>] " + text`."""

from __future__ import annotations

from itertools import permutations

from services.stt.providers.bench import BENCH_LANGUAGES, bench_delay, primary_tag
from shared.errors import ProviderError

_PAIRS = frozenset(permutations(sorted(BENCH_LANGUAGES), 2))


class BenchTranslator:
    """Any (source, target) pair of distinct benchmark languages, after `delay_ms`."""

    name = "bench"

    def __init__(self, delay_ms: float = 0.0) -> None:
        self.delay_ms = delay_ms

    def pairs(self) -> frozenset[tuple[str, str]]:
        return _PAIRS

    async def translate(self, text: str, source: str, target: str) -> str:
        if (primary_tag(source), primary_tag(target)) not in _PAIRS:
            raise ProviderError(f"bench translator has no {source}→{target} pair")
        await bench_delay(self.delay_ms)
        return f"[{target}] {text}"

    async def close(self) -> None:
        """Nothing held."""

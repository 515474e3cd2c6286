"""The translator a worker uses: the benchmark engine, or the configured fallback chain
(default: gpt-4.1-nano → a second OpenAI model → Apertium, keyed vendors only).

Engine modules are imported only when chosen, so a benchmark worker loads none of them.
"""

from __future__ import annotations

from services.translate.provider import Translator
from shared.config import Settings
from shared.http_clients import HttpClients
from shared.provider_config import BENCH, LOCAL


WARM_PAIRS = (("en", "es"),)  # the web page's default; other pairs start on first use


def _member(entry: str, settings: Settings, http: HttpClients) -> Translator:
    p = settings.providers
    if entry == BENCH:
        from services.translate.providers.bench import BenchTranslator

        return BenchTranslator(delay_ms=settings.bench.translate_ms)
    if entry == LOCAL:
        from services.translate.providers.apertium import ApertiumTranslator

        return ApertiumTranslator(timeout_s=p.timeout_s, warm_pairs=WARM_PAIRS)
    from services.translate.providers.openai_chat import OpenAIChatTranslator

    model = entry.split(":", 1)[1] if ":" in entry else "gpt-4.1-nano"
    return OpenAIChatTranslator(p.openai_api_key, p.openai_base_url, model, http=http.get("openai"),
                                timeout_s=p.timeout_s, name=entry)


def build(settings: Settings, http: HttpClients) -> Translator:
    chain = (BENCH,) if settings.engines == "bench" else settings.providers.chain("translate")
    members = [_member(entry, settings, http) for entry in chain]
    if len(members) == 1:
        return members[0]
    from shared.fallback import FallbackTranslator

    return FallbackTranslator(members, **settings.providers.chain_options())

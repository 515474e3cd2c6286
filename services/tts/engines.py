"""The synthesizer a worker uses: the benchmark engine, or the configured fallback chain
(default: Unreal Speech → OpenAI → espeak-ng, keyed vendors only).

Engine modules are imported only when chosen, so a benchmark worker loads none of them.
"""

from __future__ import annotations

from services.tts.provider import Synthesizer
from shared.config import Settings
from shared.http_clients import HttpClients
from shared.provider_config import BENCH, LOCAL


def _member(entry: str, settings: Settings, http: HttpClients) -> Synthesizer:
    p = settings.providers
    if entry == BENCH:
        from services.tts.providers.bench import BenchSynthesizer

        return BenchSynthesizer(delay_ms=settings.bench.tts_ms)
    if entry == LOCAL:
        from services.tts.providers.espeak import EspeakSynthesizer

        return EspeakSynthesizer()
    if entry == "unrealspeech":
        from services.tts.providers.unrealspeech import UnrealSpeechSynthesizer

        return UnrealSpeechSynthesizer(p.unrealspeech_api_key, p.unrealspeech_base_url, p.unrealspeech_voice,
                                       http=http.get("unrealspeech"), timeout_s=p.timeout_s, name=entry)
    from services.tts.providers.openai_tts import OpenAISynthesizer

    model = entry.split(":", 1)[1] if ":" in entry else "gpt-4o-mini-tts"
    return OpenAISynthesizer(p.openai_api_key, p.openai_base_url, model, p.openai_voice,
                             http=http.get("openai"), timeout_s=p.timeout_s, name=entry)


def build(settings: Settings, http: HttpClients) -> Synthesizer:
    chain = (BENCH,) if settings.engines == "bench" else settings.providers.chain("tts")
    members = [_member(entry, settings, http) for entry in chain]
    if len(members) == 1:
        return members[0]
    from shared.fallback import FallbackSynthesizer

    return FallbackSynthesizer(members, **settings.providers.chain_options())

"""The recogniser a worker uses: the benchmark engine, or the configured fallback chain
(default: AssemblyAI streaming → OpenAI transcription → pocketsphinx, keyed vendors only).

Engine modules are imported only when chosen, so a benchmark worker loads none of them.
"""

from __future__ import annotations

from services.stt.provider import SttEngine
from shared.config import Settings
from shared.http_clients import HttpClients
from shared.provider_config import BENCH, LOCAL


def _member(entry: str, settings: Settings, http: HttpClients) -> SttEngine:
    p = settings.providers
    if entry == BENCH:
        from services.stt.providers.bench import BenchSttEngine

        return BenchSttEngine(delay_ms=settings.bench.stt_ms)
    if entry == LOCAL:
        from services.stt.providers.pocketsphinx import PocketsphinxEngine

        return PocketsphinxEngine()
    if entry == "assemblyai":
        from services.stt.providers.assemblyai import AssemblyAIEngine

        return AssemblyAIEngine(p.assemblyai_api_key, p.assemblyai_base_url, p.assemblyai_speech_model,
                                timeout_s=p.timeout_s, name=entry)
    from services.stt.providers.openai_transcribe import OpenAITranscriber

    model = entry.split(":", 1)[1] if ":" in entry else "gpt-4o-mini-transcribe"
    return OpenAITranscriber(p.openai_api_key, p.openai_base_url, model, http=http.get("openai"),
                             timeout_s=p.timeout_s, name=entry)


def build(settings: Settings, http: HttpClients) -> SttEngine:
    chain = (BENCH,) if settings.engines == "bench" else settings.providers.chain("stt")
    members = [_member(entry, settings, http) for entry in chain]
    if len(members) == 1:
        return members[0]
    from shared.fallback import FallbackSttEngine

    return FallbackSttEngine(members, **settings.providers.chain_options())

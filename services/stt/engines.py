"""The recogniser a worker uses: the benchmark engine, or the configured fallback chain
(default: AssemblyAI streaming → OpenAI transcription → pocketsphinx, keyed vendors only).

Engine modules are imported only when chosen, so a benchmark worker loads none of them.
"""

from __future__ import annotations

from services.stt.provider import SttEngine
from shared.config import Settings
from shared.http_clients import HttpClients
from shared.provider_config import LOCAL


def _member(entry: str, settings: Settings, http: HttpClients) -> SttEngine:
    p = settings.providers
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
    if settings.engines == "bench":
        from services.stt.providers.bench import BenchSttEngine

        return BenchSttEngine(delay_ms=settings.bench.stt_ms)
    members = [_member(entry, settings, http) for entry in settings.providers.chain("stt")]
    if len(members) == 1:
        return members[0]
    from shared.fallback import FallbackSttEngine
    from shared.retry import RetryPolicy

    return FallbackSttEngine(members, retry=RetryPolicy(timeout_s=settings.providers.timeout_s))

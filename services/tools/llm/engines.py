"""The LLM a tools worker uses: the configured fallback chain (default: gpt-4.1-nano →
a second OpenAI model → the local keyword engine, keyed vendors only).

`OPENAI_BASE_URL` may point at any OpenAI-compatible server, so a self-hosted model
serves through the same adapter.
"""

from __future__ import annotations

from services.tools.llm.provider import LlmProvider
from shared.config import Settings
from shared.http_clients import HttpClients
from shared.provider_config import DEFAULT_MODELS, LOCAL


def _member(entry: str, settings: Settings, http: HttpClients) -> LlmProvider:
    p = settings.providers
    if entry == LOCAL:
        from services.tools.llm.keyword import KeywordLlm

        return KeywordLlm()
    from services.tools.llm.openai_chat_stream import OpenAIChatLlm

    model = entry.split(":", 1)[1] if ":" in entry else DEFAULT_MODELS["llm"]["openai"]
    return OpenAIChatLlm(p.openai_api_key, p.openai_base_url, model, http=http.get("openai"),
                         timeout_s=p.timeout_s, name=entry)


def build(settings: Settings, http: HttpClients) -> LlmProvider:
    """The same chain under every engine set: DESIGN's benchmark set has no LLM of its own."""
    chain = settings.providers.chain("llm")
    members = [_member(entry, settings, http) for entry in chain]
    if len(members) == 1:
        return members[0]
    from services.tools.llm.fallback import FallbackLlm

    return FallbackLlm(members, **settings.providers.chain_options())

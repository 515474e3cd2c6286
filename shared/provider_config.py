"""Provider settings: keys, base URLs, models, voices, chains, timeouts, prices.

Sources, later winning: built-in defaults → a TOML file (`PARLEY_CONFIG`) → the
environment (each vendor's usual names). A key that is set turns its provider on in the
default chain; no key, no provider, and no error. Keys are `Secret`s from the moment they
are read, so they never reach a repr, a log line or an error message.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from shared.breaker import BreakerConfig
from shared.retry import RetryPolicy
from shared.secrets import Secret

LOCAL = "local"
BENCH = "bench"  # the benchmark engine of the capability (DESIGN.md), usable in any chain

# Chain entries: "<vendor>" or "<vendor>:<model>"; "local" is the capability's local engine.
DEFAULT_MODELS = {
    "stt": {"openai": "gpt-4o-mini-transcribe"},
    "translate": {"openai": "gpt-4.1-nano"},
    "tts": {"openai": "gpt-4o-mini-tts"},
    "llm": {"openai": "gpt-4.1-nano"},
}


@dataclass(frozen=True)
class ProviderSettings:
    openai_api_key: Secret | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    assemblyai_api_key: Secret | None = None
    assemblyai_base_url: str = "wss://streaming.assemblyai.com"
    assemblyai_speech_model: str = "universal-streaming-english"
    unrealspeech_api_key: Secret | None = None
    unrealspeech_base_url: str = "https://api.v8.unrealspeech.com"
    unrealspeech_voice: str = "Scarlett"
    openai_voice: str = "alloy"
    translate_fallback_model: str = "gpt-4.1-mini"
    stt_chain: tuple[str, ...] = ()
    translate_chain: tuple[str, ...] = ()
    tts_chain: tuple[str, ...] = ()
    llm_chain: tuple[str, ...] = ()
    llm_fallback_model: str = "gpt-4.1-mini"
    realtime_model: str = "gpt-realtime"
    timeout_s: float = 10.0
    breaker_reset_s: float = 30.0  # how long a failed provider rests before a probe
    probe_interval_s: float = 5.0
    prices_path: str | None = None
    translation_cache_ttl_s: float = 86400.0

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError("provider timeout must be positive")
        for capability in VENDORS:
            for entry in getattr(self, f"{capability}_chain"):
                vendor = entry.split(":", 1)[0]
                if vendor not in VENDORS[capability]:
                    raise ValueError(f"{capability} chain: unknown provider {entry!r}; "
                                     f"one of {sorted(VENDORS[capability])}")
                if vendor in KEY_NAMES and not getattr(self, f"{vendor}_api_key"):
                    raise ValueError(f"{capability} chain names {vendor!r} but {KEY_NAMES[vendor]} is not set")

    def chain_options(self) -> dict:
        """Keyword arguments for a fallback chain: its breakers, probes and retry policy."""
        return {"breaker": BreakerConfig(reset_timeout_s=self.breaker_reset_s),
                "probe_interval_s": self.probe_interval_s,
                "retry": RetryPolicy(timeout_s=self.timeout_s)}

    def chain(self, capability: str) -> tuple[str, ...]:
        """The configured chain, or the default: budget vendor → OpenAI → local, keyed ones only."""
        configured = getattr(self, f"{capability}_chain")
        if configured:
            return configured
        keyed = {"assemblyai": self.assemblyai_api_key, "openai": self.openai_api_key,
                 "unrealspeech": self.unrealspeech_api_key}
        default = {
            "stt": ["assemblyai", f"openai:{DEFAULT_MODELS['stt']['openai']}"],
            "translate": [f"openai:{DEFAULT_MODELS['translate']['openai']}",
                          f"openai:{self.translate_fallback_model}"],
            "tts": ["unrealspeech", f"openai:{DEFAULT_MODELS['tts']['openai']}"],
            "llm": [f"openai:{DEFAULT_MODELS['llm']['openai']}", f"openai:{self.llm_fallback_model}"],
        }[capability]
        return tuple(e for e in default if keyed[e.split(":")[0]]) + (LOCAL,)

    @classmethod
    def load(cls, env: dict[str, str] | None = None) -> "ProviderSettings":
        env = dict(os.environ if env is None else env)
        values: dict = {}
        path = env.get("PARLEY_CONFIG")
        if path:
            values.update(_from_file(Path(path)))
        values.update(_from_env(env))
        return cls(**values)


VENDORS = {
    "stt": {"assemblyai", "openai", LOCAL, BENCH},
    "translate": {"openai", LOCAL, BENCH},
    "tts": {"unrealspeech", "openai", LOCAL, BENCH},
    "llm": {"openai", LOCAL},  # any OpenAI-compatible server through OPENAI_BASE_URL
}

KEY_NAMES = {"openai": "OPENAI_API_KEY", "assemblyai": "ASSEMBLYAI_API_KEY",
             "unrealspeech": "UNREAL_SPEECH_API_KEY"}

_ENV = {
    "OPENAI_API_KEY": "openai_api_key",
    "OPENAI_BASE_URL": "openai_base_url",
    "ASSEMBLYAI_API_KEY": "assemblyai_api_key",
    "ASSEMBLYAI_BASE_URL": "assemblyai_base_url",
    "ASSEMBLYAI_SPEECH_MODEL": "assemblyai_speech_model",
    "UNREALSPEECH_API_KEY": "unrealspeech_api_key",  # the official SDK's name
    "UNREAL_SPEECH_API_KEY": "unrealspeech_api_key",
    "UNREAL_SPEECH_BASE_URL": "unrealspeech_base_url",
    "UNREAL_SPEECH_VOICE": "unrealspeech_voice",
    "OPENAI_TTS_VOICE": "openai_voice",
    "PARLEY_TRANSLATE_FALLBACK_MODEL": "translate_fallback_model",
    "PARLEY_STT_CHAIN": "stt_chain",
    "PARLEY_TRANSLATE_CHAIN": "translate_chain",
    "PARLEY_TTS_CHAIN": "tts_chain",
    "PARLEY_LLM_CHAIN": "llm_chain",
    "PARLEY_LLM_FALLBACK_MODEL": "llm_fallback_model",
    "PARLEY_REALTIME_MODEL": "realtime_model",
    "PARLEY_PROVIDER_TIMEOUT_S": "timeout_s",
    "PARLEY_BREAKER_RESET_S": "breaker_reset_s",
    "PARLEY_PROBE_INTERVAL_S": "probe_interval_s",
    "PARLEY_PRICES": "prices_path",
    "PARLEY_TRANSLATION_CACHE_TTL_S": "translation_cache_ttl_s",
}


def _coerce(name: str, raw) -> object:
    if name.endswith("_api_key"):
        return Secret(str(raw)) if raw else None
    if name.endswith("_chain"):
        items = raw if isinstance(raw, list) else str(raw).split(",")
        return tuple(str(i).strip() for i in items if str(i).strip())
    if name.endswith("_s"):
        return float(raw)
    return str(raw)


def _from_env(env: dict[str, str]) -> dict:
    return {name: _coerce(name, env[var]) for var, name in _ENV.items() if env.get(var)}


def _from_file(path: Path) -> dict:
    """`[providers]` table with the field names of ProviderSettings."""
    with path.open("rb") as handle:
        table = tomllib.load(handle).get("providers", {})
    known = {f.name for f in fields(ProviderSettings)}
    unknown = set(table) - known
    if unknown:
        raise ValueError(f"{path}: unknown provider settings {sorted(unknown)}")
    return {name: _coerce(name, value) for name, value in table.items()}

"""Frozen, validated settings. Flags win over the environment; units are in the names."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from shared.provider_config import ProviderSettings

ENGINE_SETS = ("local", "bench")


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _env_float(name: str, default: float) -> float:
    raw = _env(name)
    return float(raw) if raw is not None else default


@dataclass(frozen=True)
class BenchDelays:
    """Delays of the benchmark engines (DESIGN.md), default 0 ms."""

    stt_ms: float = 0.0
    translate_ms: float = 0.0
    tts_ms: float = 0.0

    @classmethod
    def from_env(cls) -> "BenchDelays":
        return cls(
            stt_ms=_env_float("PARLEY_BENCH_STT_DELAY_MS", 0.0),
            translate_ms=_env_float("PARLEY_BENCH_TRANSLATE_DELAY_MS", 0.0),
            tts_ms=_env_float("PARLEY_BENCH_TTS_DELAY_MS", 0.0),
        )


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings:
    nats_url: str = "nats://127.0.0.1:4222"
    redis_url: str | None = None
    prefix: str = "parley"
    engines: str = "local"
    bench: BenchDelays = field(default_factory=BenchDelays)
    providers: ProviderSettings = field(default_factory=ProviderSettings)
    # edge
    host: str = "127.0.0.1"
    port: int = 8080
    chunk_ms: int = 500
    vad_rms: float = 500.0
    vad_hangover_ms: int = 300
    vad_preroll_ms: int = 200
    resume_window_s: float = 120.0
    start_timeout_s: float = 10.0
    idle_timeout_s: float = 300.0  # no message at all from a connected client (pings count)
    max_session_s: float = 4 * 3600.0  # from session.start, across reconnections
    max_text_frame_bytes: int = 64 * 1024
    max_frame_audio_s: float = 1.0
    assistant_engine: str = "pipeline"  # for sessions that do not choose one
    # workers
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"  # a worker's /metrics; 0.0.0.0 in a container, for Prometheus
    work_deadline_s: float = 10.0
    # An assistant turn may wait on tools for many seconds; one redelivered after its worker
    # died is still the answer the person is waiting for, so it gets longer.
    turn_deadline_s: float = 60.0
    stt_lease_s: float = 3.0
    drain_timeout_s: float = 10.0  # SIGTERM: in-flight work not done by then is handed back
    stream_replicas: int = 1  # JetStream replicas of the streams: 3 on a 3-node NATS cluster
    provider_timeout_s: float = 10.0
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.engines not in ENGINE_SETS:
            raise ValueError(f"engines must be one of {ENGINE_SETS}, not {self.engines!r}")
        if not 20 <= self.chunk_ms <= 1000 or self.chunk_ms % 20:
            raise ValueError("chunk_ms must be a multiple of 20 between 20 and 1000")
        if self.assistant_engine not in ("pipeline", "realtime"):
            raise ValueError("assistant_engine must be 'pipeline' or 'realtime'")
        if not 1 <= self.stream_replicas <= 5:
            raise ValueError("stream_replicas must be between 1 and 5")
        if min(self.resume_window_s, self.start_timeout_s, self.idle_timeout_s, self.max_session_s) <= 0:
            raise ValueError("timeouts must be positive")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}")

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        """Environment first, then explicit (non-None) overrides from flags."""
        env = {
            "nats_url": _env("NATS_URL", cls.nats_url),
            "redis_url": _env("REDIS_URL"),
            "prefix": _env("PARLEY_PREFIX", cls.prefix),
            "engines": _env("PARLEY_ENGINES", cls.engines),
            "bench": BenchDelays.from_env(),
            "providers": ProviderSettings.load(),
            "chunk_ms": int(_env_float("PARLEY_CHUNK_MS", cls.chunk_ms)),
            "vad_rms": _env_float("PARLEY_VAD_RMS", cls.vad_rms),
            "vad_hangover_ms": int(_env_float("PARLEY_VAD_HANGOVER_MS", cls.vad_hangover_ms)),
            "resume_window_s": _env_float("PARLEY_RESUME_WINDOW_S", cls.resume_window_s),
            "start_timeout_s": _env_float("PARLEY_START_TIMEOUT_S", cls.start_timeout_s),
            "idle_timeout_s": _env_float("PARLEY_IDLE_TIMEOUT_S", cls.idle_timeout_s),
            "max_session_s": _env_float("PARLEY_MAX_SESSION_S", cls.max_session_s),
            "metrics_port": int(_env_float("PARLEY_METRICS_PORT", cls.metrics_port)),
            "metrics_host": _env("PARLEY_METRICS_HOST", cls.metrics_host),
            "work_deadline_s": _env_float("PARLEY_WORK_DEADLINE_S", cls.work_deadline_s),
            "turn_deadline_s": _env_float("PARLEY_TURN_DEADLINE_S", cls.turn_deadline_s),
            "drain_timeout_s": _env_float("PARLEY_DRAIN_TIMEOUT_S", cls.drain_timeout_s),
            "stream_replicas": int(_env_float("PARLEY_STREAM_REPLICAS", cls.stream_replicas)),
            "log_level": _env("PARLEY_LOG_LEVEL", cls.log_level),
            "assistant_engine": _env("PARLEY_ASSISTANT_ENGINE", cls.assistant_engine),
        }
        env.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**env)

"""Usage metering: providers report what they consumed; the caller collects it.

A worker opens a `Meter` around one unit of work (an utterance's recognition, one
translation, one synthesis); every provider call inside reports with `record()`. The
meter lives in a context variable, so concurrent work items never mix their usage and
providers need no extra parameter.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

UNITS = ("audio_seconds", "input_tokens", "output_tokens", "characters")


@dataclass(frozen=True)
class Usage:
    provider: str  # e.g. "openai", "assemblyai", "unrealspeech", "local"
    model: str  # e.g. "gpt-4.1-nano", "universal-streaming", "pocketsphinx"
    capability: str  # "stt", "translate", "tts", "llm"
    audio_seconds: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    characters: int = 0


@dataclass
class Meter:
    records: list[Usage] = field(default_factory=list)


_current: ContextVar[Meter | None] = ContextVar("parley_meter", default=None)


def record(usage: Usage) -> None:
    """Called by providers; a no-op when nobody is metering."""
    meter = _current.get()
    if meter is not None:
        meter.records.append(usage)


@contextmanager
def metering():
    meter = Meter()
    token = _current.set(meter)
    try:
        yield meter
    finally:
        _current.reset(token)

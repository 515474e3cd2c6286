"""Streaming speech-to-text: one small Protocol, engines behind it."""

from __future__ import annotations

from typing import Protocol


class SttSession(Protocol):
    """Recognition for one speaker. Audio arrives per utterance, in order."""

    async def feed(self, pcm: bytes) -> str | None:
        """Add PCM16LE mono at the engine's rate (16 kHz); return a new partial or None."""

    async def finish(self) -> str:
        """End the current utterance; return its final text ('' when nothing was heard)."""

    async def close(self) -> None:
        """Release the session's resources (an open stream, a pooled decoder)."""


class SttEngine(Protocol):
    name: str
    sample_rate: int  # what feed() expects; the worker resamples to it
    languages: frozenset[str]

    def open(self, language: str) -> SttSession: ...

    async def warm_up(self) -> None:
        """Load what the first session would otherwise wait for."""

"""Streaming text-to-speech: one small Protocol, engines behind it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol


class Synthesizer(Protocol):
    name: str
    languages: frozenset[str]

    def synthesize(
        self, text: str, language: str, voice: str | None, sample_rate: int
    ) -> AsyncIterator[bytes]:
        """PCM16LE mono at `sample_rate`, in chunks, the first as early as possible."""

    async def close(self) -> None: ...

"""Text translation: one small Protocol, engines behind it."""

from __future__ import annotations

from typing import Protocol


class Translator(Protocol):
    name: str

    def pairs(self) -> frozenset[tuple[str, str]]:
        """(source, target) BCP-47 primary tags this engine translates."""

    async def translate(self, text: str, source: str, target: str) -> str: ...

    async def warm_up(self) -> None:
        """Load what the first request would otherwise wait for."""

    async def close(self) -> None: ...

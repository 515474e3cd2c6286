"""Fake vendor servers for contract tests: real HTTP on 127.0.0.1, with knobs."""

from __future__ import annotations

from collections.abc import AsyncIterator


async def drain(stream: AsyncIterator[bytes]) -> tuple[list[bytes], BaseException | None]:
    """Every chunk a synthesizer yields, and the error that ended it (None: it finished)."""
    chunks: list[bytes] = []
    try:
        async for chunk in stream:
            chunks.append(chunk)
    except Exception as exc:  # noqa: BLE001 - the caller asserts on it
        return chunks, exc
    return chunks, None

"""A scripted protocol client for tests and benchmarks."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection, connect


class ProtocolClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict] = []
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str, **kwargs) -> "ProtocolClient":
        return cls(await connect(url, max_size=None, **kwargs))

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                event = json.loads(frame)
                event["_t"] = time.monotonic()
                async with self._changed:
                    self.events.append(event)
                    self._changed.notify_all()
        except Exception:
            pass
        finally:
            if not self.closed.done():
                self.closed.set_result((self.ws.close_code, self.ws.close_reason))
            async with self._changed:
                self._changed.notify_all()

    async def send(self, message: dict) -> None:
        await self.ws.send(json.dumps(message))

    async def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 30.0) -> dict:
        async def find() -> dict:
            async with self._changed:
                while True:
                    for event in self.events:
                        if predicate(event):
                            return event
                    if self.closed.done():
                        raise ConnectionError(f"closed {self.closed.result()} while waiting; got {self.types()}")
                    await self._changed.wait()

        return await asyncio.wait_for(find(), timeout)

    async def wait_type(self, type_: str, timeout: float = 30.0, **fields) -> dict:
        return await self.wait_for(
            lambda e: e.get("type") == type_ and all(e.get(k) == v for k, v in fields.items()), timeout
        )

    async def start(self, **fields) -> dict:
        await self.send({"type": "session.start", "mode": "translate", **fields})
        return await self.wait_for(lambda e: e.get("type") in ("session.started", "error"))

    async def stream(self, pcm: bytes, sample_rate: int = 16000, frame_ms: int = 20, realtime: bool = True) -> float:
        """Send PCM in frames at real-time pace; returns the monotonic time of the last frame."""
        step = sample_rate * frame_ms // 1000 * 2
        began = time.monotonic()
        sent_at = began
        for i, offset in enumerate(range(0, len(pcm), step)):
            if realtime:
                await asyncio.sleep(max(0.0, began + i * frame_ms / 1000 - time.monotonic()))
            await self.ws.send(pcm[offset:offset + step])
            sent_at = time.monotonic()
        return sent_at

    def of_type(self, type_: str) -> list[dict]:
        return [e for e in self.events if e.get("type") == type_]

    def types(self) -> list[str]:
        return [e.get("type") for e in self.events]

    def durable(self) -> list[dict]:
        return [e for e in self.events if "seq" in e]

    def audio(self, utterance_id: str | None = None) -> bytes:
        return b"".join(
            base64.b64decode(e["audio"]) for e in self.of_type("audio.delta")
            if utterance_id is None or e["utterance_id"] == utterance_id
        )

    def drop(self) -> None:
        """Lose the connection abruptly, as a network failure would (no close frame)."""
        self.ws.transport.abort()

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()

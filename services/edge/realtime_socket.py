"""The client's WebSocket as a `Session` sees it, while the client speaks OpenAI Realtime.

`Session` reads Parley frames with `recv()` / `async for` and writes Parley events with
`send()`; this adapter runs both through a `RealtimeTranslator` and moves Realtime events
on the real socket. It keeps no protocol state of its own.
- Start: the `session.start` the Session waits for is sent once the client sends a first
  event that is not `session.update`, or has been quiet for `start_grace_s` (a client that
  waits for `session.created` before it says anything).
- End: Realtime has no resume, so a client that goes away ends the session at once: the
  Session is handed a `session.end` and its remaining events are dropped.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from services.edge.realtime_api import ParleyMessage, RealtimeTranslator

START_GRACE_S = 0.3
_END = json.dumps({"type": "session.end"})


class RealtimeSocket:
    def __init__(self, ws: Any, translator: RealtimeTranslator, start_grace_s: float = START_GRACE_S) -> None:
        self.ws = ws
        self.translator = translator
        self.start_grace_s = start_grace_s
        self._inbox: deque[str | bytes] = deque()  # Parley frames for the Session, in order
        self._lock = asyncio.Lock()  # one translation and its events at a time: keeps order
        self._peer_gone = False
        self._ending = False  # the session.end standing for the client's departure is handed over

    def __getattr__(self, name: str) -> Any:
        if name == "ws":  # not set yet: never recurse
            raise AttributeError(name)
        return getattr(self.ws, name)  # request, remote_address, close_code … of the real socket

    async def recv(self) -> str | bytes:
        while not self._inbox:
            await self._pull()
        return self._inbox.popleft()

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        try:
            while True:
                yield await self.recv()
        except ConnectionClosedOK:
            return

    async def send(self, message: str) -> None:
        """One Parley event from the Session, as the Realtime events it means."""
        if self._peer_gone:
            return  # the session is ending; nobody is left to tell
        async with self._lock:
            await self._deliver(self.translator.parley_event(json.loads(message)))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.close(code, reason)

    async def _pull(self) -> None:
        waiting = not self.translator.started
        try:
            frame = await asyncio.wait_for(self.ws.recv(), self.start_grace_s if waiting else None)
        except (asyncio.TimeoutError, TimeoutError):
            frame = None
        except ConnectionClosed:
            if not self.translator.started or self._ending:
                raise
            self._peer_gone = self._ending = True
            self._inbox.append(_END)
            return
        async with self._lock:
            translation = self.translator.start() if frame is None else self.translator.client_event(frame)
            await self._deliver(translation.to_client)
        self._inbox.extend(_frame(m) for m in translation.to_parley)

    async def _deliver(self, events: list[dict]) -> None:
        for event in events:
            try:
                await self.ws.send(json.dumps(event, separators=(",", ":"), ensure_ascii=False))
            except ConnectionClosed:
                self._peer_gone = True  # recv() turns it into the session's end
                return


def _frame(message: ParleyMessage) -> str | bytes:
    return message if isinstance(message, bytes) else json.dumps(message, separators=(",", ":"))

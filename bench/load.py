"""The load generator: many WebSocket clients in one asyncio loop, paced by one scheduler.

Why one scheduler and not one sleeping task per client: at 200 sessions that is 10,000
frames a second; a single heap of (due time, client, frame) wakes the loop once for all
frames that are due together, and every frame is sent against an absolute deadline
(start + k · 20 ms), so pacing never drifts. Frames are pre-sliced bytes (see scripts.py);
per frame the hot path is one `ws.send` and, for the few frames that matter, one
`time.monotonic()`. Every time here is `time.monotonic()`.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import time
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.scripts import FRAME_MS, Script

FRAME_S = FRAME_MS / 1000
# First arrival of these, per utterance, is what the benchmark measures.
TRACKED = frozenset({"speech.stopped", "transcript.final", "translation", "audio.delta", "audio.done"})


class Client:
    """One session: sends its script's frames when told, records what comes back."""

    def __init__(self, ws: ClientConnection, script: Script, session_id: str) -> None:
        self.ws = ws
        self.script = script
        self.session_id = session_id
        self.marked = frozenset(script.eos + script.closes)
        self.sent_at: dict[int, float] = {}  # frame index → send time, marked frames only
        self.first: dict[tuple[str, int], float] = {}  # (event type, utterance n) → arrival
        self.texts: dict[tuple[str, int], str] = {}
        self.problems: list[dict] = []  # error and warning events
        self.broken: str | None = None
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                arrived = time.monotonic()
                event = json.loads(message)
                kind = event.get("type")
                if kind in TRACKED:
                    key = (kind, int(event["utterance_id"].rsplit("-", 1)[1]))
                    if key not in self.first:
                        self.first[key] = arrived
                        if "text" in event:
                            self.texts[key] = event["text"]
                elif kind in ("error", "warning"):
                    self.problems.append({k: event.get(k) for k in ("type", "code", "message")})
        except ConnectionClosed as exc:
            self.broken = self.broken or f"closed: {exc}"

    async def send_frame(self, k: int) -> None:
        await self.ws.send(self.script.frames[k])
        if k in self.marked:
            self.sent_at[k] = time.monotonic()

    def complete(self) -> bool:
        return all(("audio.delta", n) in self.first for n in range(1, len(self.script.eos) + 1))

    async def end(self, timeout_s: float = 10.0) -> None:
        """session.end, so the system releases the session before the next level."""
        try:
            await self.ws.send(json.dumps({"type": "session.end"}))
            await asyncio.wait_for(self.ws.wait_closed(), timeout_s)
        except (ConnectionClosed, TimeoutError, asyncio.TimeoutError):
            pass
        await self.ws.close()
        self._reader.cancel()


async def open_client(url: str, script: Script, start: dict, compression: str | None) -> Client:
    ws = await connect(url, max_size=None, compression=compression, ping_interval=None, open_timeout=60)
    await ws.send(json.dumps({"type": "session.start", "mode": "translate", **start}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 60))
    if reply.get("type") != "session.started":
        await ws.close()
        raise RuntimeError(f"session.start refused: {reply}")
    return Client(ws, script, reply["session_id"])


async def open_clients(url: str, scripts: list[Script], start: dict, compression: str | None,
                       parallel: int = 16) -> list[Client]:
    gate = asyncio.Semaphore(parallel)  # a few handshakes at a time, like a real ramp

    async def one(script: Script) -> Client:
        async with gate:
            return await open_client(url, script, start, compression)

    return list(await asyncio.gather(*(one(s) for s in scripts)))


async def stream(clients: list[Client], starts: list[float]) -> tuple[list[float], int]:
    """Send every client's frames at real-time pace from `starts[i]` on. Returns each
    frame's send lag (seconds late against its deadline: the generator's own health) and
    how many sends found their connection write-paused (the edge not reading: such a send
    waits, and holds up every other client's frames with it)."""
    heap = [(start, i, 0) for i, start in enumerate(starts)]
    heapq.heapify(heap)
    lags: list[float] = []
    paused = 0
    while heap:
        due, i, k = heap[0]
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
            continue
        heapq.heappop(heap)
        client = clients[i]
        if client.broken:
            continue
        paused += getattr(client.ws, "paused", False)
        try:
            await client.send_frame(k)
        except ConnectionClosed as exc:
            client.broken = f"send failed: {exc}"
            continue
        lags.append(now - due)
        if k + 1 < len(client.script.frames):
            heapq.heappush(heap, (starts[i] + (k + 1) * FRAME_S, i, k + 1))
    return lags, paused


async def wait_complete(clients: list[Client], timeout_s: float) -> float:
    """Until every utterance has its first audio (or the timeout); returns the wait."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if all(c.complete() or c.broken for c in clients):
            break
        await asyncio.sleep(0.05)
    return time.monotonic() - began


@dataclass
class UtteranceTimes:
    """One utterance's milestones, in ms after its end of speech (None: never came)."""

    client: int
    n: int
    vad_close_ms: float | None
    final_ms: float | None
    translation_ms: float | None
    first_audio_ms: float | None
    audio_done_ms: float | None
    said: str | None = None
    heard: str | None = None
    extra: dict = field(default_factory=dict)


def utterance_times(index: int, client: Client) -> list[UtteranceTimes]:
    out = []
    for n, (eos, close) in enumerate(zip(client.script.eos, client.script.closes), start=1):
        t0 = client.sent_at.get(eos)

        def after(t: float | None) -> float | None:
            return None if t is None or t0 is None else round(1000 * (t - t0), 3)

        out.append(UtteranceTimes(
            client=index, n=n,
            vad_close_ms=after(client.sent_at.get(close)),
            final_ms=after(client.first.get(("transcript.final", n))),
            translation_ms=after(client.first.get(("translation", n))),
            first_audio_ms=after(client.first.get(("audio.delta", n))),
            audio_done_ms=after(client.first.get(("audio.done", n))),
            said=client.script.texts[n - 1] if client.script.texts else None,
            heard=client.texts.get(("transcript.final", n)),
        ))
    return out

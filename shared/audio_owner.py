"""What every owner of a session's audio does alike — the STT worker and the Realtime
bridge: take chunks off `parley.audio.<sid>` into a bounded queue, skip replays of audio it
already took (the edge replays after a re-claim), and keep the edge's lease alive until
the session has been silent for a whole resume window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from shared import metrics
from shared.messages import AudioChunk, SttLease, decode, encode

log = logging.getLogger("parley.audio")

MAX_QUEUED_CHUNKS = 64  # ~32 s of audio at 500 ms chunks: a stalled engine cannot grow memory
RECENT_UTTERANCES = 16  # only recent utterances can be replayed


def _keep_recent(table: dict) -> None:
    while len(table) > RECENT_UTTERANCES:
        table.pop(next(iter(table)))


class AudioIntake:
    def __init__(self, sid: str, what: str) -> None:
        self.sid, self.what = sid, what  # `what`: who is behind, in a log line
        self.queue: asyncio.Queue[AudioChunk] = asyncio.Queue(MAX_QUEUED_CHUNKS)
        self.heard: dict[str, int] = {}  # utterance → highest chunk index taken
        self.ended_at: dict[str, float] = {}  # utterance → when its last chunk arrived
        self.last_heard = time.monotonic()

    async def on_audio(self, msg) -> None:
        """The NATS callback of `parley.audio.<sid>`."""
        try:
            chunk = decode(msg.data)
        except ValueError as exc:
            log.warning("malformed audio chunk for %s: %s", self.sid, exc)
            return
        if not isinstance(chunk, AudioChunk):
            return
        self.last_heard = time.monotonic()
        metrics.BUS_MESSAGES.labels("audio", "in").inc()
        if chunk.last:
            self.ended_at[chunk.utterance_id] = time.perf_counter()
            _keep_recent(self.ended_at)  # replays of finished utterances are never popped
        try:
            self.queue.put_nowait(chunk)
        except asyncio.QueueFull:
            log.warning("%s for %s is behind; dropping a chunk", self.what, self.sid)

    def first_time(self, chunk: AudioChunk) -> bool:
        """False for a replay of audio already taken; records the chunk otherwise."""
        if chunk.index <= self.heard.get(chunk.utterance_id, -1):
            return False
        self.heard[chunk.utterance_id] = chunk.index
        _keep_recent(self.heard)
        return True

    @property
    def last_utterance(self) -> str | None:
        return next(reversed(self.heard), None)


class Lease:
    """The owner's lease on `parley.stt.lease.<sid>`; `finished` tells the edge which
    utterance's audio it may forget."""

    def __init__(self, runtime, sid: str, worker_id: str) -> None:
        self.runtime, self.sid, self.worker_id = runtime, sid, worker_id
        self.finished = ""

    async def publish(self) -> None:
        lease = SttLease(self.sid, self.worker_id, self.finished)
        await self.runtime.nc.publish(self.runtime.subjects.stt_lease(self.sid), encode(lease))

    async def finish(self, utterance_id: str) -> None:
        """Done with this utterance: the edge may forget its audio now."""
        self.finished = utterance_id
        await self.publish()

    async def keep(self, intake: AudioIntake, let_go: Callable[[], None]) -> None:
        """Renew every lease/3 while audio comes; silent for a whole resume window, the edge
        may be gone: let go (if it is not, it sees the lease lapse and claims again)."""
        settings = self.runtime.settings
        while time.monotonic() - intake.last_heard < settings.resume_window_s:
            await self.publish()
            await asyncio.sleep(settings.stt_lease_s / 3)
        log.info("releasing idle session %s", self.sid)
        let_go()

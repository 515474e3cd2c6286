"""What every owner of a session's audio does alike — the STT worker and the Realtime
bridge: take chunks off `parley.audio.<sid>` into a bounded queue, skip replays of audio it
already took (the edge replays after a re-claim, or when an utterance it ended is not
finished in time), and keep the edge's lease alive until
the session has been silent for a whole resume window.

An owner that falls behind (a stalled engine, audio sent faster than real time) sheds the
oldest audio in the middle of an utterance, never an utterance's last chunk, so every
utterance still ends and gets its final; the speaker is warned once per utterance.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from shared import bus, metrics
from shared.messages import AudioChunk, SttLease, decode, encode

log = logging.getLogger("parley.audio")

MAX_QUEUED_CHUNKS = 64  # ~32 s of audio at 500 ms chunks: a stalled engine cannot grow memory
RECENT_UTTERANCES = 16  # only recent utterances can be replayed


def _keep_recent(table: dict) -> None:
    while len(table) > RECENT_UTTERANCES:
        table.pop(next(iter(table)))


class AudioIntake:
    def __init__(self, runtime, sid: str, what: str) -> None:
        self.runtime, self.sid, self.what = runtime, sid, what  # `what`: who is behind, in a log line
        self.pending: deque[AudioChunk] = deque()
        self.arrived = asyncio.Event()
        self.heard: dict[str, int] = {}  # utterance → highest chunk index taken
        self.ended_at: dict[str, float] = {}  # utterance → when its last chunk arrived
        self.shed_from: dict[str, None] = {}  # utterances whose speaker was told audio was shed
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
        if not self._first_time(chunk):
            return  # a replay of audio already taken (the edge re-claimed, or sent it again)
        if chunk.last:
            self.ended_at[chunk.utterance_id] = time.perf_counter()
            _keep_recent(self.ended_at)  # replays of finished utterances are never popped
        self.pending.append(chunk)
        self.arrived.set()
        if len(self.pending) > MAX_QUEUED_CHUNKS:
            await self._shed()

    async def next_chunk(self) -> AudioChunk:
        while not self.pending:
            self.arrived.clear()
            await self.arrived.wait()
        return self.pending.popleft()

    async def _shed(self) -> None:
        """Drop the oldest chunk that does not end its utterance (only ends queued: the
        oldest of those, a pathological flood of one-chunk utterances)."""
        victim = next((c for c in self.pending if not c.last), self.pending[0])
        self.pending.remove(victim)
        metrics.AUDIO_SHED.labels(self.what).inc()
        if victim.utterance_id in self.shed_from:
            return
        self.shed_from[victim.utterance_id] = None
        _keep_recent(self.shed_from)
        log.warning("%s for %s is behind; shedding audio of %s", self.what, self.sid, victim.utterance_id)
        event = {"type": "warning", "code": "audio_dropped", "utterance_id": victim.utterance_id,
                 "message": f"{self.what} fell behind: part of this utterance's audio was skipped"}
        await bus.publish_event(self.runtime.js, self.runtime.subjects, self.sid, event,
                                msg_id=f"{victim.utterance_id}:audio_dropped")

    def _first_time(self, chunk: AudioChunk) -> bool:
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

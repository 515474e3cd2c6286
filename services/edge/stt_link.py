"""The edge's link to the STT worker that owns a session: claim, lease watch, replay.

The edge keeps every chunk it sent until the owner's lease says that utterance is
finished. When the lease lapses (the owner died, or NATS lost it), the edge claims the
session again — some other worker answers — and replays what it kept, so no speech is lost.
Audio goes over core NATS, which drops what a subscriber misses while it reconnects: when
an utterance the edge ended is not finished a lease period later although the owner is
alive, the edge sends the kept audio again (the owner skips what it already has).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from services.edge.context import EdgeContext
from shared import metrics
from shared.messages import (
    Assistant,
    AudioChunk,
    Route,
    RouteUpdate,
    SttClaim,
    SttClaimed,
    SttLease,
    decode,
    encode,
)
from shared.state import SessionRecord

log = logging.getLogger("parley.edge.stt")

CLAIM_TIMEOUT_S = 2.0
MAX_KEPT_CHUNKS = 240  # 2 min at 500 ms chunks: a long outage cannot grow memory for ever


class SttLink:
    def __init__(
        self,
        ctx: EdgeContext,
        record: SessionRecord,
        route: Route,
        assistant: Callable[[], Assistant | None] = lambda: None,
        clock=time.monotonic,
    ) -> None:
        self.ctx = ctx
        self.record = record
        self.route = route
        self.assistant = assistant  # the config as it is now: a re-claim carries the latest
        self.unconfirmed: deque[AudioChunk] = deque(maxlen=MAX_KEPT_CHUNKS)
        self.clock = clock
        self.last_lease = clock()
        self.owner: str | None = None
        self.replay_at: float | None = None  # an ended utterance unfinished by then: send again
        self._sub = None
        self._watchdog: asyncio.Task | None = None

    async def start(self, claim_now: bool) -> None:
        """Claim at once for a new session; for a resumed one, first give the current
        owner one lease period to show it is still alive."""
        self._sub = await self.ctx.nc.subscribe(self.ctx.subjects.stt_lease(self.record.sid), cb=self._on_lease)
        if claim_now:
            await self.claim()
        self._watchdog = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._watchdog:
            self._watchdog.cancel()
        if self._sub:
            await self._sub.unsubscribe()

    async def _on_lease(self, msg) -> None:
        self.last_lease = self.clock()
        try:
            lease = decode(msg.data)
        except ValueError:
            return
        if isinstance(lease, SttLease) and lease.finished:
            self.forget_through(lease.finished)

    def forget_through(self, utterance_id: str) -> None:
        """Drop the kept audio up to the last chunk of `utterance_id`."""
        positions = [i for i, c in enumerate(self.unconfirmed) if c.utterance_id == utterance_id]
        for _ in range(positions[-1] + 1 if positions else 0):
            self.unconfirmed.popleft()
        if not any(c.last for c in self.unconfirmed):
            self.replay_at = None

    async def claim(self) -> bool:
        r = self.record
        assistant = self.assistant()
        claim = SttClaim(r.sid, r.language, r.input_sample_rate, self.route, r.principal, assistant)
        subject = self.ctx.subjects.stt_claim
        if assistant is not None and assistant.engine == "realtime":
            subject = self.ctx.subjects.realtime_claim  # the speech-to-speech bridge owns the audio
        try:
            reply = await self.ctx.nc.request(subject, encode(claim), timeout=CLAIM_TIMEOUT_S)
            claimed = decode(reply.data)
        except Exception as exc:  # no responders / timeout / garbage: try again on the next tick
            log.warning("stt claim for %s failed: %s", self.record.sid, exc)
            return False
        if not isinstance(claimed, SttClaimed):
            return False
        self.owner = claimed.worker_id
        self.last_lease = self.clock()
        for chunk in list(self.unconfirmed):
            await self._publish(chunk)
        return True

    async def _watch(self) -> None:
        lease_s = self.ctx.settings.stt_lease_s
        while True:
            await asyncio.sleep(lease_s / 3)
            if self.clock() - self.last_lease > lease_s:
                log.warning("stt lease of %s lapsed (owner %s); claiming again", self.record.sid, self.owner)
                await self.claim()
            elif self.replay_at is not None and self.clock() >= self.replay_at:
                log.info("an utterance of %s is not finished; sending its audio again", self.record.sid)
                self.replay_at = self.clock() + lease_s
                for chunk in list(self.unconfirmed):
                    await self._publish(chunk)

    async def send(self, chunk: AudioChunk) -> None:
        self.unconfirmed.append(chunk)
        if chunk.last and self.replay_at is None:
            self.replay_at = self.clock() + self.ctx.settings.stt_lease_s
        await self._publish(chunk)

    async def _publish(self, chunk: AudioChunk) -> None:
        await self.ctx.nc.publish(self.ctx.subjects.audio(self.record.sid), encode(chunk))
        metrics.BUS_MESSAGES.labels("audio", "out").inc()

    async def update_route(self, route: Route) -> None:
        self.route = route
        await self.ctx.nc.publish(self.ctx.subjects.ctl(self.record.sid), encode(RouteUpdate(self.record.sid, route)))

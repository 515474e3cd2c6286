"""Delivery of a session's durable events: out-stream → a bounded outbox → the client.

The JetStream callback never waits for the client: it puts each event in the outbox and a
sender task writes them to the socket. A client that reads too slowly cannot grow the
edge's memory: when the outbox is full, the oldest `transcript.partial`s are shed first
(a later partial or the final says more), the client gets a `warning` (`slow_client`);
when only events that must not be lost are left, the connection is closed with 1013
(try again later) and the client resumes from its last `seq` — every durable event is
still in the out-stream for the resume window, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from nats.js.api import ConsumerConfig, DeliverPolicy
from websockets.exceptions import ConnectionClosed

from services.edge.context import EdgeContext
from shared import bus, metrics, telemetry
from shared.messages import ClientEvent, decode

log = logging.getLogger("parley.edge")

MAX_OUTBOX_EVENTS = 512
SHEDDABLE = frozenset({"transcript.partial"})
UNTRACED = frozenset({"transcript.partial", "audio.delta"})
WARN_EVERY_S = 5.0
CLOSE_TRY_AGAIN = 1013


class Outbox:
    """A bounded FIFO of (seq, event | None); None marks a seq with nothing to send (it
    still moves `sent_seq` on, which `wait_sent` watches)."""

    def __init__(self, max_events: int = MAX_OUTBOX_EVENTS) -> None:
        self.max_events = max_events
        self._items: deque[tuple[int, dict | None]] = deque()

    def push(self, seq: int, event: dict | None) -> int:
        """Queue an event; returns how many partials were shed to make room."""
        self._items.append((seq, event))
        shed = 0
        while len(self._items) > self.max_events and self._shed_oldest_partial():
            shed += 1
        return shed

    def _shed_oldest_partial(self) -> bool:
        """Drop the oldest partial (or seq with nothing to send). A later item carries a
        higher seq, so the client's view of what was delivered only moves on."""
        for index, (_, event) in enumerate(self._items):
            if event is None or event.get("type") in SHEDDABLE:
                del self._items[index]
                return True
        return False

    @property
    def overflowing(self) -> bool:
        return len(self._items) > self.max_events

    def pop(self) -> tuple[int, dict | None] | None:
        return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        return len(self._items)


class Delivery:
    """One connection's delivery: `keep(event)` decides what the client sees (barge-in
    drops audio of a cancelled reply), `send` writes to the socket, `close` ends it."""

    def __init__(self, ctx: EdgeContext, sid: str, send: Callable[[dict], Awaitable[None]],
                 keep: Callable[[dict], bool], close: Callable[[int, str], Awaitable[None]]) -> None:
        self.ctx, self.sid = ctx, sid
        self._send, self._keep, self._close = send, keep, close
        self.outbox = Outbox()
        self.sent_seq = 0
        self._queued_seq = 0
        self._ready = asyncio.Event()
        self._sent = asyncio.Condition()
        self._last_warning = 0.0
        self._closing: asyncio.Task | None = None
        self._sub = None
        self._sender: asyncio.Task | None = None

    async def start(self, last_seq: int | None) -> None:
        if last_seq is None:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
        else:
            self.sent_seq = self._queued_seq = last_seq
            config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=last_seq + 1)
        self._sender = asyncio.create_task(self._send_all())
        self._sub = await self.ctx.js.subscribe(
            self.ctx.subjects.out(self.sid), stream=self.ctx.subjects.out_stream,
            cb=self._on_out, ordered_consumer=True, config=config, idle_heartbeat=bus.ORDERED_HEARTBEAT_S,
        )

    async def stop(self) -> None:
        if self._sender:
            self._sender.cancel()
        if self._sub:
            try:
                await self._sub.unsubscribe()
            except Exception:  # already gone with the connection to NATS
                pass

    async def wait_sent(self, seq: int, timeout_s: float) -> None:
        async with self._sent:
            try:
                await asyncio.wait_for(self._sent.wait_for(lambda: self.sent_seq >= seq), timeout_s)
            except (asyncio.TimeoutError, TimeoutError):
                pass

    async def _on_out(self, msg) -> None:
        seq = msg.metadata.sequence.stream
        if seq <= self._queued_seq:
            return
        self._queued_seq = seq
        metrics.BUS_MESSAGES.labels("out", "in").inc()
        try:
            message = decode(msg.data)
        except ValueError:
            log.error("undecodable event in out-stream for %s", self.sid)
            message = None
        event = message.event if isinstance(message, ClientEvent) and self._keep(message.event) else None
        with self._delivery_span(msg, event):
            shed = self.outbox.push(seq, event)
        self._ready.set()
        if shed:
            await self._warn_shed(shed)
        if self.outbox.overflowing and self._closing is None:
            log.warning("client of %s reads too slowly; closing so it resumes", self.sid)
            metrics.CLIENT_ERRORS.labels("slow_client").inc()
            # Not awaited: a slow client may take its time over the closing handshake.
            self._closing = asyncio.create_task(self._close(CLOSE_TRY_AGAIN, "client too slow: resume from your last seq"))

    def _delivery_span(self, msg, event: dict | None):
        """The trace's last hop: a result reached the edge, on its way to the client (not
        every audio chunk or partial: those would be most of the spans and say little)."""
        kind = event.get("type") if event else None
        if kind is None or kind in UNTRACED or not telemetry.tracing_enabled():
            return contextlib.nullcontext()
        return telemetry.span("edge.deliver", (msg.headers or {}).get(bus.TRACEPARENT), sid=self.sid,
                              utterance_id=event.get("utterance_id"), **{"parley.event": kind})

    async def _warn_shed(self, count: int) -> None:
        metrics.PARTIALS_SHED.inc(count)
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_S:
            self._last_warning = now
            await bus.publish_event(self.ctx.js, self.ctx.subjects, self.sid, {
                "type": "warning", "code": "slow_client",
                "message": "you read events too slowly: older partial transcripts were dropped"})

    async def _send_all(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while (item := self.outbox.pop()) is not None:
                seq, event = item
                if event is not None:
                    try:
                        await self._send({**event, "seq": seq})
                    except ConnectionClosed:
                        return  # the client resumes from its last_seq; nothing is lost
                    metrics.EVENTS_OUT.labels(str(event.get("type"))).inc()
                async with self._sent:
                    self.sent_seq = seq
                    self._sent.notify_all()

"""NATS connection, JetStream layout and the few publish helpers every process uses."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import (
    ConnectionReconnectingError,
    NoRespondersError,
    OutboundBufferLimitError,
    StaleConnectionError,
)
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NoStreamResponseError, ServiceUnavailableError

from shared import metrics, telemetry
from shared.messages import ClientEvent, encode
from shared.telemetry import child_traceparent
from shared.subjects import Subjects

log = logging.getLogger("parley.bus")

DEADLINE_HEADER = "Parley-Deadline"  # epoch milliseconds after which the work is noise
TRACEPARENT = "traceparent"
# A TTS worker speaking a sentence of a reply says so this often (a reply message with this
# header), so the turn runner tells a dead worker from a slow voice long before its timeout.
SPEAKING_HEADER = "Parley-Speaking"
SPEAKING_BEAT_S = 1.0
DUPLICATE_WINDOW_S = 120.0
# A JetStream publish that fails while NATS restarts or a cluster elects a new stream leader
# is tried again, with the same Nats-Msg-Id so it lands once, for about this long.
PUBLISH_RETRY_S = 15.0
PUBLISH_TIMEOUT_S = 2.0
# The edge's ordered consumers notice a lost consumer (NATS restarted, its server gone from
# the cluster) after two missed idle heartbeats and recreate it from the last seq they saw.
# nats-py's default (5 s) meant 10-20 s without events after a NATS restart; 1 s costs one
# small message a second per idle session.
ORDERED_HEARTBEAT_S = 1.0
_TRANSIENT = (NatsTimeoutError, NoRespondersError, NoStreamResponseError, ServiceUnavailableError,
              ConnectionReconnectingError, StaleConnectionError, OutboundBufferLimitError, asyncio.TimeoutError)


async def connect(url: str, name: str) -> Client:
    """A connection that reconnects forever: a NATS restart must heal by itself."""
    servers = [u.strip() for u in url.split(",") if u.strip()]

    async def on_error(exc: Exception) -> None:
        log.warning("nats error: %s", exc)

    async def on_disconnect() -> None:
        log.warning("nats disconnected")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    return await nats.connect(
        servers=servers,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )


async def ensure_streams(js: JetStreamContext, subjects: Subjects, resume_window_s: float,
                         replicas: int = 1) -> None:
    """Create (or update) the out-stream and the work queue; idempotent across processes.

    `replicas` > 1 (a NATS cluster) keeps both streams, and the work consumers, which
    inherit it, alive when a server is lost."""
    configs = [
        StreamConfig(
            name=subjects.out_stream,
            subjects=[subjects.out_wildcard],
            retention=RetentionPolicy.LIMITS,
            max_age=resume_window_s,
            storage=StorageType.FILE,
            duplicate_window=min(DUPLICATE_WINDOW_S, resume_window_s),
            num_replicas=replicas,
        ),
        StreamConfig(
            name=subjects.work_stream,
            subjects=[subjects.work_wildcard],
            retention=RetentionPolicy.WORK_QUEUE,
            discard=DiscardPolicy.OLD,
            max_age=max(60.0, resume_window_s),
            storage=StorageType.FILE,
            duplicate_window=min(DUPLICATE_WINDOW_S, max(60.0, resume_window_s)),
            num_replicas=replicas,
        ),
    ]
    for config in configs:
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.update_stream(config)


def outgoing_traceparent(traceparent: str | None) -> str:
    """The header for what this hop publishes: the current span when there is one (its
    child on the next hop), else a new hop of `traceparent`'s trace."""
    return telemetry.current_traceparent() or child_traceparent(traceparent)


def work_headers(traceparent: str | None, deadline_s: float, msg_id: str) -> dict[str, str]:
    return {
        TRACEPARENT: outgoing_traceparent(traceparent),
        DEADLINE_HEADER: str(int((time.time() + deadline_s) * 1000)),
        "Nats-Msg-Id": msg_id,
    }


def deadline_passed(headers: dict[str, str] | None, now_s: float | None = None) -> bool:
    raw = (headers or {}).get(DEADLINE_HEADER)
    if not raw:
        return False
    try:
        return (now_s if now_s is not None else time.time()) * 1000 > int(raw)
    except ValueError:
        return False


async def publish_event(
    js: JetStreamContext,
    subjects: Subjects,
    sid: str,
    event: dict[str, Any],
    msg_id: str | None = None,
    traceparent: str | None = None,
) -> int:
    """Store one durable client event in the out-stream; returns its stream sequence (seq).

    `msg_id` makes a retried publish (a redelivered work item) land only once.
    """
    headers = {TRACEPARENT: outgoing_traceparent(traceparent), "Nats-Msg-Id": msg_id or secrets.token_hex(12)}
    return await publish_durable(js, subjects.out(sid), encode(ClientEvent(event=event)), headers)


async def publish_durable(js: JetStreamContext, subject: str, payload: bytes, headers: dict[str, str]) -> int:
    """JetStream publish that rides out a NATS restart or a stream leader election.

    Without this, an event or a unit of work published during the outage was lost (the
    caller logged the error and went on). A retry carries the same `Nats-Msg-Id` (callers
    without one get a random id from `publish_event`), so a publish whose ack was lost
    lands once. Returns the stream sequence.
    """
    deadline = time.monotonic() + PUBLISH_RETRY_S
    pause = 0.1
    while True:
        try:
            ack = await js.publish(subject, payload, timeout=PUBLISH_TIMEOUT_S, headers=headers)
            metrics.BUS_MESSAGES.labels(metrics.family(subject), "out").inc()
            return ack.seq
        except _TRANSIENT as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("publish to %s failed (%s: %s); trying again", subject, type(exc).__name__, exc)
            await asyncio.sleep(pause)
            pause = min(1.0, pause * 2)


def process_id() -> str:
    return f"{os.uname().nodename}:{os.getpid()}"

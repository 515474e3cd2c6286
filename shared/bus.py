"""NATS connection, JetStream layout and the few publish helpers every process uses."""

from __future__ import annotations

import logging
import os
import secrets
import time
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from shared.messages import ClientEvent, encode
from shared.subjects import Subjects

log = logging.getLogger("parley.bus")

DEADLINE_HEADER = "Parley-Deadline"  # epoch milliseconds after which the work is noise
TRACEPARENT = "traceparent"
DUPLICATE_WINDOW_S = 120.0


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


async def ensure_streams(js: JetStreamContext, subjects: Subjects, resume_window_s: float) -> None:
    """Create (or update) the out-stream and the work queue; idempotent across processes."""
    configs = [
        StreamConfig(
            name=subjects.out_stream,
            subjects=[subjects.out_wildcard],
            retention=RetentionPolicy.LIMITS,
            max_age=resume_window_s,
            storage=StorageType.FILE,
            duplicate_window=min(DUPLICATE_WINDOW_S, resume_window_s),
        ),
        StreamConfig(
            name=subjects.work_stream,
            subjects=[subjects.work_wildcard],
            retention=RetentionPolicy.WORK_QUEUE,
            discard=DiscardPolicy.OLD,
            max_age=max(60.0, resume_window_s),
            storage=StorageType.FILE,
            duplicate_window=min(DUPLICATE_WINDOW_S, max(60.0, resume_window_s)),
        ),
    ]
    for config in configs:
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.update_stream(config)


def new_traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def child_traceparent(parent: str | None) -> str:
    """Same trace, new span id: each hop is its own span."""
    if parent and parent.count("-") == 3:
        version, trace_id, _, flags = parent.split("-")
        return f"{version}-{trace_id}-{secrets.token_hex(8)}-{flags}"
    return new_traceparent()


def work_headers(traceparent: str | None, deadline_s: float, msg_id: str) -> dict[str, str]:
    return {
        TRACEPARENT: child_traceparent(traceparent),
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
    headers = {TRACEPARENT: child_traceparent(traceparent)}
    if msg_id:
        headers["Nats-Msg-Id"] = msg_id
    ack = await js.publish(subjects.out(sid), encode(ClientEvent(event=event)), headers=headers)
    return ack.seq


def process_id() -> str:
    return f"{os.uname().nodename}:{os.getpid()}"

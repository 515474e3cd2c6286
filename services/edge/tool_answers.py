"""Forwarding a client's `tool.result` to the turn that waits for it.

A turn listens on `parley.toolres.<sid>` while it waits. When its tools worker dies, the
turn is redelivered to another worker within the work queue's ack wait, and the new turn
sends the same `tool.call` again (deduplicated: the client saw it once). A client that
answers in between would find nobody listening, its answer lost and the new turn left to
time out, so while nobody answers the edge tries again for a while.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from shared.messages import ToolAnswer, decode, encode
from shared.worker import ACK_WAIT_S

log = logging.getLogger("parley.edge")

ANSWER_TIMEOUT_S = 2.0
NOBODY_LISTENS_RETRY_S = ACK_WAIT_S + 2.0  # a redelivered turn listens again by then
RETRY_PAUSE_S = 0.25


async def forward_answer(nc: Client, subject: str, answer: ToolAnswer) -> bool:
    """True when a turn took the answer."""
    deadline = time.monotonic() + NOBODY_LISTENS_RETRY_S
    while True:
        try:
            reply = await nc.request(subject, encode(answer), timeout=ANSWER_TIMEOUT_S)
            return bool(decode(reply.data).accepted)
        except (NoRespondersError, NatsTimeoutError):  # a timeout: it may have died just now
            if time.monotonic() >= deadline:
                log.warning("no turn listens for tool answers of %s", answer.sid)
                return False
            await asyncio.sleep(RETRY_PAUSE_S)
        except Exception as exc:  # no answer in time, or garbage: nobody waits for this call
            log.warning("tool answer %s of %s not taken: %r", answer.call_id, answer.sid, exc)
            return False

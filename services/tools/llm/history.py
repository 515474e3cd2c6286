"""Conversation history per assistant session: Redis when configured and up, else memory.

Redis holds one list per session (`<prefix>:conv:<sid>`, one JSON message per item);
every append is RPUSH + LTRIM + EXPIRE in one transaction, so the list stays bounded and
a forgotten session disappears after `ttl_s` of silence. Any tools worker can then carry
on any session's conversation.

The list is cut by count, so it may begin in the middle of a turn; `window()` drops that
partial turn on the way out: the model always sees the conversation from a user message
on, never a tool result without the assistant message that asked for it. Append an
assistant message with `tool_calls` together with its results (one `append` call, or at
least before the next `load`), or the model rejects the history.

Redis failing is never raised: a process-memory copy (written through on every append,
refreshed on every load) serves meanwhile, and messages appended while Redis was down
are pushed to it once it answers again. After a failure Redis is skipped for
`redis_retry_s` (a breaker), so a dead Redis costs one timeout, not one per turn.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.breaker import BreakerConfig, BreakerState, CircuitBreaker

log = logging.getLogger("parley.tools")


# ---- pure ---------------------------------------------------------------------------------


def window(messages: list[dict], max_messages: int) -> list[dict]:
    """The last `max_messages` at most, starting at a user message.

    With no user message among them (one turn of many tool calls), at the first message
    that is not a tool result: a cut there never parts calls from their results.
    """
    tail = messages[-max_messages:] if max_messages else []
    for role_ok in (lambda r: r == "user", lambda r: r != "tool"):
        start = next((i for i, m in enumerate(tail) if role_ok(m.get("role"))), None)
        if start is not None:
            return tail[start:]
    return []


def encode(message: dict) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def decode(raw: bytes | str) -> dict | None:
    """A stored message, or None for an item that is not one (it is skipped)."""
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return message if isinstance(message, dict) else None


@dataclass
class _Conversation:
    messages: list[dict] = field(default_factory=list)
    expires_at: float = 0.0
    unsent: int = 0  # the last `unsent` messages have not reached Redis yet
    reset: bool = False  # cleared while Redis was down: its copy must go first


@dataclass(frozen=True)
class _Change:
    """What Redis has not seen of a conversation yet, taken before the await."""

    reset: bool = False
    unsent: tuple[dict, ...] = ()

    @classmethod
    def of(cls, conversation: _Conversation | None) -> _Change:
        if conversation is None:
            return cls()
        unsent = conversation.messages[-conversation.unsent:] if conversation.unsent else []
        return cls(conversation.reset, tuple(unsent))


class MemoryHistory:
    """Process memory: each conversation bounded in length and age, oldest-touched first."""

    def __init__(self, max_messages: int, ttl_s: float, clock: Callable[[], float]) -> None:
        self._max, self._ttl_s, self._clock = max_messages, ttl_s, clock
        self._items: OrderedDict[str, _Conversation] = OrderedDict()

    def get(self, sid: str) -> _Conversation | None:
        self._expire()
        return self._items.get(sid)

    def touch(self, sid: str) -> _Conversation:
        """The session's conversation (a new one if none), its age reset."""
        self._expire()
        conversation = self._items.pop(sid, None) or _Conversation()
        conversation.expires_at = self._clock() + self._ttl_s
        self._items[sid] = conversation  # the newest go last
        return conversation

    def append(self, sid: str, messages: list[dict]) -> _Conversation:
        """Add messages, counted as not yet in Redis (the store says when they are)."""
        conversation = self.touch(sid)
        conversation.messages = (conversation.messages + messages)[-self._max:]
        conversation.unsent = min(conversation.unsent + len(messages), len(conversation.messages))
        return conversation

    def drop(self, sid: str) -> None:
        self._items.pop(sid, None)

    def _expire(self) -> None:
        now = self._clock()
        while self._items:
            sid, oldest = next(iter(self._items.items()))
            if oldest.expires_at > now:
                return
            del self._items[sid]


# ---- the store ----------------------------------------------------------------------------


class ConversationStore:
    def __init__(self, redis_url: str | None, prefix: str = "parley", max_messages: int = 50,
                 ttl_s: float = 3600, *, redis_retry_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_messages < 2 or ttl_s <= 0:
            raise ValueError("max_messages must be at least 2 and ttl_s positive")
        self.max_messages, self.ttl_s, self._prefix = max_messages, ttl_s, prefix
        self._clock = clock
        self._memory = MemoryHistory(max_messages, ttl_s, clock)
        self._redis = (aioredis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
                       if redis_url else None)
        self._breaker = CircuitBreaker(BreakerConfig(
            failure_threshold=1, reset_timeout_s=redis_retry_s,
            max_reset_timeout_s=max(redis_retry_s, 60.0)))

    @property
    def degraded(self) -> bool:
        """True while a configured Redis is being skipped after a failure."""
        return self._redis is not None and self._breaker.state is not BreakerState.CLOSED

    def key(self, session_id: str) -> str:
        return f"{self._prefix}:conv:{session_id}"

    async def load(self, session_id: str) -> list[dict]:
        """The conversation so far, ready to send to the model (see `window`)."""
        conversation = self._memory.get(session_id)
        change = _Change.of(conversation)
        stored = await self._redis_call(lambda r: self._write(r, session_id, change, read=True))
        if stored is not None:  # Redis is the truth: other workers append too
            conversation = self._memory.touch(session_id)
            conversation.messages = [m for m in map(decode, stored) if m is not None]
            conversation.unsent, conversation.reset = 0, False
        return window(conversation.messages if conversation else [], self.max_messages)

    async def append(self, session_id: str, *messages: dict) -> None:
        """Add messages at the end; a session's appends must not overlap (one turn at a
        time), or the same message may reach Redis twice."""
        if not messages:
            return
        conversation = self._memory.append(session_id, list(messages))
        change = _Change.of(conversation)
        if await self._redis_call(lambda r: self._write(r, session_id, change)) is not None:
            conversation.unsent = max(0, conversation.unsent - len(change.unsent))
            conversation.reset = False

    async def clear(self, session_id: str) -> None:
        conversation = self._memory.touch(session_id)
        conversation.messages, conversation.unsent, conversation.reset = [], 0, True
        if await self._redis_call(lambda r: r.delete(self.key(session_id))) is not None:
            self._memory.drop(session_id)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def _write(self, r: aioredis.Redis, session_id: str, change: _Change, *,
                     read: bool = False) -> list:
        """One transaction: the change, then (when `read`) the stored list."""
        key = self.key(session_id)
        async with r.pipeline(transaction=True) as pipe:
            if change.reset:
                pipe.delete(key)
            if change.unsent:
                pipe.rpush(key, *map(encode, change.unsent))
                pipe.ltrim(key, -self.max_messages, -1)
                pipe.expire(key, max(1, round(self.ttl_s)))
            if read:
                pipe.lrange(key, 0, -1)
            results = await pipe.execute()
        return results[-1] if read else results

    async def _redis_call(self, call):
        """The call's result, or None when there is no Redis or it failed (logged once)."""
        if self._redis is None or not self._breaker.allow(self._clock()):
            return None
        try:
            result = await call(self._redis)
        except (RedisError, OSError) as exc:
            if self._breaker.state is not BreakerState.HALF_OPEN:
                log.warning("redis unavailable (%s); conversation history uses memory only",
                            type(exc).__name__)
            self._breaker.record_failure(self._clock())
            return None
        if self._breaker.state is BreakerState.HALF_OPEN:
            log.info("redis is back; conversation history is shared again")
        self._breaker.record_success(self._clock())
        return result

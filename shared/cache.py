"""Translation cache: conversation repeats itself ("Yes.", "Thank you.", "Can you hear me?").

Keys are the SHA-256 of (normalised text, source, target, engine): the text is casefolded,
its whitespace collapsed and stripped, so "Thank  you. " and "thank you." share an entry.
No text is ever stored in a key.

Where: Redis when a URL is given and it answers (shared by every translate worker, SET with
EX), plus a small process-memory LRU in front of it, which alone serves when there is no
Redis and when Redis fails. A Redis failure is never raised to the caller: a cache that is
down is a cache that misses. After a failure Redis is skipped for `redis_retry_s` (a
breaker), so a dead Redis costs one timeout, not one per translation.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError

from shared.breaker import BreakerConfig, BreakerState, CircuitBreaker

log = logging.getLogger("parley.cache")

CACHE_LOOKUPS = Counter(
    "parley_translation_cache_total", "Translation cache lookups", ["result"]
)


def normalize(text: str) -> str:
    return " ".join(text.casefold().split())


def cache_key(text: str, source: str, target: str, engine: str, prefix: str = "parley") -> str:
    fields = (normalize(text), source.lower(), target.lower(), engine)
    digest = hashlib.sha256("\x1f".join(fields).encode()).hexdigest()  # \x1f: no field has it
    return f"{prefix}:tcache:{digest}"


class MemoryLru:
    """Bounded in count and in age; the oldest-used entry goes first."""

    def __init__(self, max_items: int, ttl_s: float, clock: Callable[[], float]) -> None:
        self._max_items, self._ttl_s, self._clock = max_items, ttl_s, clock
        self._items: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> str | None:
        value, expires = self._items.get(key, (None, 0.0))
        if value is None:
            return None
        if expires <= self._clock():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return value

    def put(self, key: str, value: str) -> None:
        self._items[key] = (value, self._clock() + self._ttl_s)
        self._items.move_to_end(key)
        while len(self._items) > self._max_items:
            self._items.popitem(last=False)


class TranslationCache:
    def __init__(self, redis_url: str | None, *, ttl_s: float = 86400, max_items: int = 10000,
                 prefix: str = "parley", redis_retry_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s <= 0 or max_items < 1:
            raise ValueError("ttl_s must be positive and max_items at least 1")
        self._ttl_s, self._prefix, self._clock = ttl_s, prefix, clock
        self._memory = MemoryLru(max_items, ttl_s, clock)
        self._redis = (aioredis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
                       if redis_url else None)
        self._redis_breaker = CircuitBreaker(BreakerConfig(
            failure_threshold=1, reset_timeout_s=redis_retry_s,
            max_reset_timeout_s=max(redis_retry_s, 60.0)))
        self.hits = 0
        self.misses = 0

    @property
    def degraded(self) -> bool:
        """True while a configured Redis is being skipped after a failure."""
        return self._redis is not None and self._redis_breaker.state is not BreakerState.CLOSED

    async def get(self, text: str, source: str, target: str, engine: str) -> str | None:
        key = cache_key(text, source, target, engine, self._prefix)
        value = self._memory.get(key)
        if value is None:
            raw = await self._redis_call(lambda r: r.get(key))
            if raw is not None:
                value = raw.decode()
                self._memory.put(key, value)  # the next lookup skips the round trip
        self._count(value is not None)
        return value

    async def put(self, text: str, source: str, target: str, engine: str, translation: str) -> None:
        key = cache_key(text, source, target, engine, self._prefix)
        self._memory.put(key, translation)
        await self._redis_call(lambda r: r.set(key, translation, ex=max(1, round(self._ttl_s))))

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    def _count(self, hit: bool) -> None:
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        CACHE_LOOKUPS.labels(result="hit" if hit else "miss").inc()

    async def _redis_call(self, call):
        """The call's result, or None when there is no Redis or it failed (logged once)."""
        if self._redis is None or not self._redis_breaker.allow(self._clock()):
            return None
        try:
            result = await call(self._redis)
        except (RedisError, OSError) as exc:
            if self._redis_breaker.state is not BreakerState.HALF_OPEN:
                log.warning("redis unavailable (%s); the translation cache uses memory only",
                            type(exc).__name__)
            self._redis_breaker.record_failure(self._clock())
            return None
        if self._redis_breaker.state is BreakerState.HALF_OPEN:
            log.info("redis is back; the translation cache is shared again")
        self._redis_breaker.record_success(self._clock())
        return result

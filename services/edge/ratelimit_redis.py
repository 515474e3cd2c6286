"""Rate limits shared by every edge: Redis, with process memory while Redis is down.

Each operation is one Lua script (atomic on the server, one round trip), doing what the
pure core in `ratelimit` does; time is Redis's own clock (`TIME`), so edges with skewed
clocks still agree. Buckets are hashes that expire once they would be full again; leases
are sorted sets scored by expiry, plus one key per session naming its owner.

`FallbackLimiter` asks Redis first. A Redis error opens a breaker (shared/breaker.py, as
the translation cache does): for the next few seconds every call goes to memory without
trying Redis, so a dead Redis costs one timeout, not one per message. Leases taken in
Redis are mirrored in memory, so this edge's own sessions still count while Redis is
away. In memory the limits hold per edge, not across edges.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError

from services.edge.ratelimit import OK, BucketRequest, MemoryLimiter, Scope
from shared.breaker import BreakerConfig, BreakerState, CircuitBreaker

log = logging.getLogger("parley.ratelimit")

FALLBACKS = Counter("parley_ratelimit_memory_total", "Rate-limit checks decided in memory because Redis failed")

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS: bucket hashes. ARGV: rate, capacity, cost for each key. Returns 0, or the 1-based
# index of the first bucket that refused (then nothing is taken).
TAKE = _NOW + """
local levels = {}
for i, key in ipairs(KEYS) do
  local rate, cap, cost = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i])
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens, at = tonumber(state[1]), tonumber(state[2])
  if tokens == nil or at == nil then tokens = cap
  else tokens = math.min(cap, tokens + math.max(0, now - at) * rate) end
  if tokens < cost then return i end
  levels[i] = tokens - cost
end
for i, key in ipairs(KEYS) do
  local rate, cap = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1])
  redis.call('HSET', key, 'tokens', string.format('%.17g', levels[i]), 'at', string.format('%.17f', now))
  redis.call('PEXPIRE', key, math.ceil(cap / rate * 1000) + 1000)
end
return 0
"""

# KEYS[1]: the session's owner key; KEYS[2..]: scope sets. ARGV: member, owner, ttl (ms),
# force (0/1), then each scope's limit. Returns 0, or the 1-based index of a full scope.
ACQUIRE = _NOW + """
local member, owner, ttl, force = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
local now_ms = math.floor(now * 1000)
for i = 2, #KEYS do redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now_ms) end
if not force then
  for i = 2, #KEYS do
    local limit = tonumber(ARGV[3 + i])
    if not redis.call('ZSCORE', KEYS[i], member) and redis.call('ZCARD', KEYS[i]) >= limit then
      return i - 1
    end
  end
end
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], now_ms + ttl, member)
  redis.call('PEXPIRE', KEYS[i], 2 * ttl)
end
redis.call('SET', KEYS[1], owner, 'PX', ttl)
return 0
"""

# Same KEYS and ARGV[1..3]. Extends the lease, or puts it back after Redis lost it (a
# restart), unless another connection owns the session now. Returns 1 when held.
RENEW = _NOW + """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[2] then return 0 end
local ttl, now_ms = tonumber(ARGV[3]), math.floor(now * 1000)
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], now_ms + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], 2 * ttl)
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
return 1
"""

# Same KEYS, ARGV: member, owner. Returns 1 when released, 0 when another owner holds it.
RELEASE = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[2] then return 0 end
for i = 2, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
redis.call('DEL', KEYS[1])
return 1
"""


class RedisLimiter:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._prefix = prefix
        self._take = client.register_script(TAKE)
        self._acquire = client.register_script(ACQUIRE)
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)

    def _owner_key(self, member: str) -> str:
        return f"{self._prefix}:rl:lease:{member}"

    async def take(self, requests: Sequence[BucketRequest]) -> int:
        args = [v for r in requests for v in (r.rate_per_s, r.capacity, r.cost)]
        refused = int(await self._take(keys=[r.key for r in requests], args=args))
        return refused - 1 if refused else OK

    async def acquire(self, member: str, owner: str, scopes: Sequence[Scope], ttl_s: float,
                      force: bool = False) -> int:
        keys = [self._owner_key(member), *(s.key for s in scopes)]
        args = [member, owner, int(ttl_s * 1000), int(force), *(s.limit for s in scopes)]
        refused = int(await self._acquire(keys=keys, args=args))
        return refused - 1 if refused else OK

    async def renew(self, member: str, owner: str, scopes: Sequence[Scope], ttl_s: float) -> bool:
        keys = [self._owner_key(member), *(s.key for s in scopes)]
        return bool(await self._renew(keys=keys, args=[member, owner, int(ttl_s * 1000)]))

    async def release(self, member: str, owner: str, scopes: Sequence[Scope]) -> bool:
        keys = [self._owner_key(member), *(s.key for s in scopes)]
        return bool(await self._release(keys=keys, args=[member, owner]))


class FallbackLimiter:
    """Redis while it answers, process memory otherwise (see the module's docstring)."""

    def __init__(self, redis: RedisLimiter | None, memory: MemoryLimiter, retry_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._redis, self.memory, self._clock = redis, memory, clock
        self._breaker = CircuitBreaker(BreakerConfig(failure_threshold=1, reset_timeout_s=retry_s,
                                                     max_reset_timeout_s=max(retry_s, 30.0)))

    @property
    def degraded(self) -> bool:
        return self._redis is not None and self._breaker.state is not BreakerState.CLOSED

    async def _on_redis(self, call) -> tuple[bool, object]:
        """(True, result) when Redis answered; (False, None) when it is skipped or failed."""
        if self._redis is None or not self._breaker.allow(self._clock()):
            return False, None
        try:
            result = await call(self._redis)
        except (RedisError, OSError) as exc:
            if self._breaker.state is not BreakerState.HALF_OPEN:
                log.warning("redis unavailable (%s); rate limits are kept in this edge's memory",
                            type(exc).__name__)
            self._breaker.record_failure(self._clock())
            return False, None
        if self._breaker.state is BreakerState.HALF_OPEN:
            log.info("redis is back; rate limits are shared by every edge again")
        self._breaker.record_success(self._clock())
        return True, result

    async def take(self, requests: Sequence[BucketRequest]) -> int:
        answered, refused = await self._on_redis(lambda r: r.take(requests))
        if answered:
            return refused
        if self._redis is not None:
            FALLBACKS.inc()
        return self.memory.take_now(requests)

    async def acquire(self, member: str, owner: str, scopes: Sequence[Scope], ttl_s: float) -> tuple[int, bool]:
        """(refused index or OK, whether the lease is held in Redis)."""
        answered, refused = await self._on_redis(lambda r: r.acquire(member, owner, scopes, ttl_s))
        if answered:
            if refused == OK:  # mirrored: this edge's sessions count if Redis goes away
                await self.memory.acquire(member, owner, scopes, ttl_s, force=True)
            return refused, True
        return await self.memory.acquire(member, owner, scopes, ttl_s), False

    async def renew(self, member: str, owner: str, scopes: Sequence[Scope], ttl_s: float, in_redis: bool) -> bool:
        held = await self.memory.renew(member, owner, scopes, ttl_s)
        if in_redis:
            answered, held_there = await self._on_redis(lambda r: r.renew(member, owner, scopes, ttl_s))
            held = bool(held_there) if answered else held
        return held

    async def release(self, member: str, owner: str, scopes: Sequence[Scope], in_redis: bool) -> None:
        await self.memory.release(member, owner, scopes)
        if in_redis:
            await self._on_redis(lambda r: r.release(member, owner, scopes))


def open_limiter(redis_url: str | None, prefix: str, clock: Callable[[], float] = time.monotonic) -> FallbackLimiter:
    memory = MemoryLimiter(clock)
    if not redis_url:
        return FallbackLimiter(None, memory, clock=clock)
    client = aioredis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return FallbackLimiter(RedisLimiter(client, prefix), memory, clock=clock)

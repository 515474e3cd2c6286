"""The Lua rate limiter against a real Redis: the same answers as the pure core, shared by
every limiter on that Redis, and process memory while Redis is away."""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis

from services.edge.ratelimit import OK, BucketRequest, MemoryLimiter, Scope
from services.edge.ratelimit_redis import FallbackLimiter, RedisLimiter, open_limiter
from tests.support.servers import start_redis


def keys() -> str:
    return f"rl-test-{uuid.uuid4().hex[:8]}"


async def test_buckets_in_redis_refuse_past_capacity_and_take_nothing_when_refused(redis_server):
    prefix = keys()
    limiter = RedisLimiter(aioredis.from_url(redis_server.url), prefix)
    msg = BucketRequest(f"{prefix}:msg", rate_per_s=0.001, capacity=3, cost=1)
    audio = BucketRequest(f"{prefix}:audio", rate_per_s=0.001, capacity=2.5, cost=1)
    assert [await limiter.take([msg, audio]) for _ in range(3)] == [OK, OK, 1]
    assert await limiter.take([msg]) == OK  # the refused pair took nothing from msg
    assert await limiter.take([msg]) == 0
    fresh = BucketRequest(f"{prefix}:frac", rate_per_s=0.001, capacity=1.0, cost=0.25)
    assert [await limiter.take([fresh]) for _ in range(5)] == [OK, OK, OK, OK, 0]  # fractions kept


async def test_two_edges_share_the_counts(redis_server):
    prefix = keys()
    edge1 = RedisLimiter(aioredis.from_url(redis_server.url), prefix)
    edge2 = RedisLimiter(aioredis.from_url(redis_server.url), prefix)
    scopes = [Scope(f"{prefix}:p", 2), Scope(f"{prefix}:global", 10)]
    assert await edge1.acquire("s1", "c1", scopes, 60) == OK
    assert await edge2.acquire("s2", "c2", scopes, 60) == OK
    assert await edge2.acquire("s3", "c3", scopes, 60) == 0
    assert await edge2.acquire("s1", "c4", scopes, 60) == OK  # s1 resumed on edge 2
    assert not await edge1.release("s1", "c1", scopes)  # edge 1 notices the drop late
    assert not await edge1.renew("s1", "c1", scopes, 60)
    assert await edge2.acquire("s3", "c3", scopes, 60) == 0  # s1 still counts
    assert await edge2.release("s1", "c4", scopes)
    assert await edge2.acquire("s3", "c3", scopes, 60) == OK


async def test_leases_expire_when_not_renewed(redis_server):
    prefix = keys()
    limiter = RedisLimiter(aioredis.from_url(redis_server.url), prefix)
    scopes = [Scope(f"{prefix}:p", 1)]
    assert await limiter.acquire("crashed-edge-session", "c1", scopes, ttl_s=0.001) == OK
    client = aioredis.from_url(redis_server.url)
    while await client.exists(f"{prefix}:rl:lease:crashed-edge-session"):
        pass  # a millisecond
    assert await limiter.acquire("s2", "c2", scopes, 60) == OK
    assert await limiter.renew("crashed-edge-session", "c1", [Scope(f"{prefix}:q", 1)], 60)  # put back


async def test_redis_down_falls_back_to_memory_and_comes_back():
    server = start_redis()
    now = [0.0]
    limiter = open_limiter(server.url, keys(), clock=lambda: now[0])
    scopes = [Scope("p", 1)]
    try:
        held, in_redis = await limiter.acquire("s1", "c1", scopes, 60)
        assert held == OK and in_redis and not limiter.degraded
        server.stop()
        # Memory knows this edge's session (mirrored), so the limit still holds.
        assert await limiter.acquire("s2", "c2", scopes, 60) == (0, False)
        assert limiter.degraded
        msg = BucketRequest("m", rate_per_s=0.001, capacity=2, cost=1)
        assert [await limiter.take([msg]) for _ in range(3)] == [OK, OK, 0]
        await limiter.release("s1", "c1", scopes, in_redis=True)  # memory released; Redis skipped
        assert await limiter.acquire("s2", "c2", scopes, 60) == (OK, False)
        restarted = start_redis(server.port)
        try:
            now[0] += 60  # the breaker lets a probe through
            assert await limiter.take([BucketRequest("m2", 1, 1, 1)]) == OK
            assert not limiter.degraded
        finally:
            restarted.stop()
    finally:
        server.stop()


async def test_without_redis_only_memory():
    limiter = FallbackLimiter(None, MemoryLimiter(lambda: 0.0))
    assert not limiter.degraded
    assert await limiter.acquire("s1", "c1", [Scope("p", 1)], 60) == (OK, False)

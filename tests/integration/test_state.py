"""Session and room state against a real Redis, and the memory fallback when Redis dies."""

import pytest

from shared.messages import Listener
from shared.state import FallbackStore, MemoryStore, SessionRecord, open_store
from tests.support.servers import start_redis

RECORD = SessionRecord("s1", "hash", "translate", "en", "es", None, 16000, 16000, None)


@pytest.fixture(params=["memory", "redis"])
async def store(request, redis_server):
    if request.param == "memory":
        return FallbackStore(None, MemoryStore())
    store = open_store(redis_server.url, prefix=f"t{id(request)}")
    return store


async def test_session_round_trip_and_delete(store):
    await store.save_session(RECORD, 60)
    assert await store.load_session("s1") == RECORD
    assert await store.next_generation("s1") == 1
    assert await store.next_generation("s1") == 2
    assert await store.generation("s1") == 2
    await store.delete_session("s1")
    assert await store.load_session("s1") is None
    assert await store.generation("s1") == 0


async def test_room_membership(store):
    await store.join_room("r", Listener("b", "es", 24000))
    await store.join_room("r", Listener("a", "en"))
    assert [m.sid for m in await store.room_members("r")] == ["a", "b"]
    assert (await store.room_members("r"))[1].output_sample_rate == 24000
    await store.leave_room("r", "a")
    assert [m.sid for m in await store.room_members("r")] == ["b"]


async def test_redis_down_falls_back_to_memory_and_recovers():
    redis = start_redis()
    store = open_store(redis.url)
    await store.save_session(RECORD, 60)
    assert not store.degraded
    redis.stop()
    await store.save_session(RECORD, 60)  # no exception: memory takes over
    assert store.degraded
    assert await store.load_session("s1") == RECORD
    restarted = start_redis(redis.port)
    try:
        await store.load_session("s1")
        assert not store.degraded
    finally:
        restarted.stop()


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_member_not_renewed_in_time_has_left_the_room(backend, redis_server):
    """An edge that died cannot say its members left: their membership runs out."""
    now = [1000.0]
    clock = lambda: now[0]  # noqa: E731
    if backend == "memory":
        store = MemoryStore(clock=clock, member_ttl_s=30)
    else:
        import redis.asyncio as aioredis

        from shared.state import RedisStore

        store = RedisStore(aioredis.from_url(redis_server.url), prefix=f"ttl{id(now)}", member_ttl_s=30, clock=clock)
    await store.join_room("r", Listener("gone", "es"))
    await store.join_room("r", Listener("here", "en"))
    now[0] += 20
    await store.join_room("r", Listener("here", "en"))  # renewed by its live session
    now[0] += 15
    assert [m.sid for m in await store.room_members("r")] == ["here"]

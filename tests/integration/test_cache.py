"""Translation cache (shared/cache.py) against a real Redis, in memory, and with Redis dying."""

import uuid

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from shared.cache import TranslationCache, cache_key, normalize
from tests.support.servers import start_redis


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lookups(result: str) -> float:
    return REGISTRY.get_sample_value("parley_translation_cache_total", {"result": result}) or 0.0


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("a, b", [
    ("Thank you.", "  thank   YOU. "),
    ("Straße", "STRASSE"),  # casefold, not lower
    ("one\ttwo\nthree", "one two three"),
])
def test_normalization_shares_keys(a, b):
    assert normalize(a) == normalize(b)
    assert cache_key(a, "en", "es", "openai") == cache_key(b, "en", "es", "openai")


@pytest.mark.parametrize("other", [("de", "es", "openai"), ("en", "fr", "openai"),
                                   ("en", "es", "local")])
def test_language_and_engine_are_part_of_the_key(other):
    assert cache_key("hi", "en", "es", "openai") != cache_key("hi", *other)


async def test_redis_is_shared_between_processes(redis_server, prefix):
    writer = TranslationCache(redis_server.url, prefix=prefix, ttl_s=60)
    reader = TranslationCache(redis_server.url, prefix=prefix, ttl_s=60)  # its memory is empty
    hits, misses = lookups("hit"), lookups("miss")
    assert await reader.get("Good morning", "en", "es", "openai") is None
    await writer.put("Good morning", "en", "es", "openai", "Buenos días")
    assert await reader.get("good  morning", "en", "es", "openai") == "Buenos días"
    assert (reader.hits, reader.misses) == (1, 1)
    assert (lookups("hit"), lookups("miss")) == (hits + 1, misses + 1)
    await writer.close()
    await reader.close()


async def test_redis_holds_a_hash_with_an_expiry_and_no_text(redis_server, prefix):
    cache = TranslationCache(redis_server.url, prefix=prefix, ttl_s=120)
    await cache.put("my secret plans", "en", "es", "openai", "mis planes secretos")
    raw = aioredis.from_url(redis_server.url)
    [key] = await raw.keys(f"{prefix}:*")
    assert key.decode() == cache_key("my secret plans", "en", "es", "openai", prefix)
    assert b"secret" not in key and len(key.decode().rsplit(":", 1)[1]) == 64
    assert 0 < await raw.ttl(key) <= 120
    await raw.aclose()
    await cache.close()


async def test_memory_only_without_redis():
    cache = TranslationCache(None, max_items=2)
    assert not cache.degraded
    await cache.put("a", "en", "es", "x", "A")
    await cache.put("b", "en", "es", "x", "B")
    assert await cache.get("a", "en", "es", "x") == "A"  # a is now the most recent
    await cache.put("c", "en", "es", "x", "C")  # evicts b
    assert await cache.get("b", "en", "es", "x") is None
    assert await cache.get("a", "en", "es", "x") == "A"
    assert (cache.hits, cache.misses) == (2, 1)


async def test_memory_entries_expire():
    clock = Clock()
    cache = TranslationCache(None, ttl_s=10, clock=clock)
    await cache.put("a", "en", "es", "x", "A")
    clock.now = 9.9
    assert await cache.get("a", "en", "es", "x") == "A"
    clock.now = 10
    assert await cache.get("a", "en", "es", "x") is None


async def test_an_unreachable_redis_is_a_cache_that_misses():
    dead = start_redis()
    dead.stop()
    cache = TranslationCache(dead.url)
    await cache.put("a", "en", "es", "x", "A")  # no exception
    assert cache.degraded
    assert await cache.get("a", "en", "es", "x") == "A"  # from memory
    assert await cache.get("b", "en", "es", "x") is None
    await cache.close()


async def test_redis_dying_and_coming_back(prefix):
    clock = Clock()
    server = start_redis()
    cache = TranslationCache(server.url, prefix=prefix, redis_retry_s=5, clock=clock)
    await cache.put("before", "en", "es", "x", "antes")
    server.stop()
    assert await cache.get("before", "en", "es", "x") == "antes"  # memory in front
    await cache.put("during", "en", "es", "x", "durante")  # Redis fails: no exception
    assert cache.degraded
    assert await cache.get("during", "en", "es", "x") == "durante"
    assert await cache.get("unknown", "en", "es", "x") is None
    restarted = start_redis(server.port)
    try:
        clock.now += 5  # the cache tries Redis again
        await cache.put("after", "en", "es", "x", "después")
        assert not cache.degraded
        other = TranslationCache(restarted.url, prefix=prefix)
        assert await other.get("after", "en", "es", "x") == "después"
        assert await other.get("during", "en", "es", "x") is None  # never reached Redis
        await other.close()
    finally:
        await cache.close()
        restarted.stop()


def test_settings_are_validated():
    with pytest.raises(ValueError):
        TranslationCache(None, max_items=0)
    with pytest.raises(ValueError):
        TranslationCache(None, ttl_s=0)

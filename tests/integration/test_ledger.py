"""Cost ledger (shared/cost.py) against a real Redis, and while Redis is away."""

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from shared.cost import CostLedger, PriceTable, Totals
from shared.usage import Usage
from tests.support.servers import start_redis

NANO = Usage("openai", "gpt-4.1-nano", "translate", input_tokens=100_000, output_tokens=50_000)
STT = Usage("assemblyai", "universal-streaming-english", "stt", audio_seconds=360)
NANO_USD = 0.1 * 0.1 + 0.05 * 0.4  # 100k in at $0.10/M, 50k out at $0.40/M
STT_USD = 0.1 * 0.15  # a tenth of an hour at $0.15/h


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return PriceTable.load()


async def test_totals_are_shared_through_redis(redis_server, prefix, prices):
    worker = CostLedger(redis_server.url, prices=prices, prefix=prefix)
    edge = CostLedger(redis_server.url, prices=prices, prefix=prefix)  # another process
    assert await worker.add("s1", "alice", NANO) == pytest.approx(NANO_USD)
    await worker.add_all("s1", "alice", [STT, STT])
    await worker.add("s2", "alice", NANO)
    await worker.add("s3", "bob", STT)
    s1 = await edge.totals("s1")
    assert s1.usd == pytest.approx(NANO_USD + 2 * STT_USD)
    assert (s1.audio_seconds, s1.input_tokens, s1.output_tokens) == (720, 100_000, 50_000)
    alice = await edge.principal_totals("alice")
    assert alice.usd == pytest.approx(2 * NANO_USD + 2 * STT_USD)
    assert (await edge.principal_totals("bob")).audio_seconds == 360
    assert await edge.totals("unknown") == Totals()
    assert not worker.degraded
    await worker.close()
    await edge.close()


async def test_sessions_expire_and_principals_do_not(redis_server, prefix, prices):
    ledger = CostLedger(redis_server.url, prices=prices, prefix=prefix, session_ttl_s=3600)
    await ledger.add("s1", "alice", STT)
    raw = aioredis.from_url(redis_server.url)
    assert 0 < await raw.ttl(ledger.session_key("s1")) <= 3600
    assert await raw.ttl(ledger.principal_key("alice")) == -1
    assert set(await raw.hkeys(ledger.session_key("s1"))) == {
        b"usd", b"audio_seconds", b"input_tokens", b"output_tokens", b"characters"}
    await raw.aclose()
    await ledger.close()


async def test_concurrent_adds_are_all_counted(redis_server, prefix, prices):
    ledgers = [CostLedger(redis_server.url, prices=prices, prefix=prefix) for _ in range(3)]
    usage = Usage("openai", "tts-1", "tts", characters=1000)
    await asyncio.gather(*(ledgers[i % 3].add("s", "p", usage) for i in range(60)))
    total = await ledgers[0].totals("s")
    assert total.characters == 60_000
    assert total.usd == pytest.approx(60_000 / 1e6 * 15.0)
    for ledger in ledgers:
        await ledger.close()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_redis_away_keeps_totals_in_memory_then_hands_them_over(prefix, prices):
    clock = Clock()
    server = start_redis()
    ledger = CostLedger(server.url, prices=prices, prefix=prefix, redis_retry_s=5, clock=clock)
    await ledger.add("s1", "alice", STT)
    server.stop()
    await ledger.add("s1", "alice", STT)  # no exception: kept in memory
    assert ledger.degraded
    assert (await ledger.totals("s1")).audio_seconds == 360  # Redis unreadable: memory only
    await ledger.add("s1", "alice", STT)  # Redis is not even tried for redis_retry_s
    restarted = start_redis(server.port)  # an empty Redis: the first add was lost with it
    try:
        await ledger.add("s1", "alice", NANO)
        assert ledger.degraded  # still within redis_retry_s
        clock.now += 5
        await ledger.add("s1", "alice", NANO)  # flushes what was kept, with this one
        assert not ledger.degraded
        other = CostLedger(restarted.url, prices=prices, prefix=prefix)
        s1 = await other.totals("s1")
        assert (s1.audio_seconds, s1.input_tokens) == (720, 200_000)
        assert s1.usd == pytest.approx(2 * STT_USD + 2 * NANO_USD)
        assert (await ledger.principal_totals("alice")).input_tokens == 200_000
        await other.close()
    finally:
        await ledger.close()
        restarted.stop()

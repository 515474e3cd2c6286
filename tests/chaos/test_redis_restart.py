"""Redis stopped and started again mid-session: state falls back to process memory (live
and new sessions are warned, `state_degraded`), nothing crashes, sessions go on; when Redis is
back, state is shared again."""

from __future__ import annotations

from tests.chaos.support import (
    Bus,
    assert_clean_exit,
    assert_utterances,
    speak,
    start,
    start_translate,
    transcript,
    utterance,
    wait_done,
)
from tests.support.servers import start_redis


async def test_redis_restart_mid_session(nats_server, make_system):
    redis = start_redis()
    try:
        system = make_system(nats_server.url, redis.url)
        start(system)
        bus = await Bus.connect(system.nats_url, system.env["PARLEY_PREFIX"])
        alice, a = await start_translate(system)
        await speak(alice)
        await wait_done(alice, utterance(a, 1, 1))
        redis.stop()
        await speak(alice)  # the live session goes on without Redis
        await wait_done(alice, utterance(a, 1, 2))
        warning = await alice.wait_type("warning", code="state_degraded", timeout=20)  # and is told
        assert "memory" in warning["message"]
        bob, b = await start_translate(system)  # a new session: told its state is local only
        warning = await bob.wait_type("warning", code="state_degraded")
        assert "memory" in warning["message"]
        await speak(bob)
        await wait_done(bob, utterance(b, 1, 1))
        redis = start_redis(redis.port)
        await speak(alice)
        await wait_done(alice, utterance(a, 1, 3))
        carol, c = await start_translate(system)  # Redis answers again: no warning
        await speak(carol)
        await wait_done(carol, utterance(c, 1, 1))
        for client, started, n in ((alice, a, 3), (bob, b, 1), (carol, c, 1)):
            await bus.settle(started["session_id"], client)
            assert_utterances(transcript(client), [utterance(started, 1, i) for i in range(1, n + 1)])
        assert not carol.of_type("warning"), carol.of_type("warning")
        system.check_alive()
        for client in (alice, bob, carol):
            await client.close()
        await bus.close()
        assert_clean_exit(system.stop_all())
    finally:
        redis.stop()

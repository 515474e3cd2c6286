"""Rate limits on a real edge (tests/support/secure.py): each limit flooded by one principal
while another goes on unaffected; a second edge with a global limit and its own Redis,
which is stopped mid-test (the limits then hold from memory)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.client import ProtocolClient
from tests.support.metrics import scrape
from tests.support.secure import api_key, connect, secure_env, started, write_config
from tests.support.servers import start_redis
from tests.support.system import ParleySystem

SILENCE_100MS = b"\x00\x00" * 1600


@pytest.fixture(scope="module")
def edge_b(secure_parley, nats_server, tmp_path_factory):
    """Another edge of the same system, with a global limit of 3 sessions and its own Redis."""
    redis = start_redis()
    logs = tmp_path_factory.mktemp("secure-edge-b")
    system = ParleySystem(nats_server.url, redis.url, "bench", logs,
                          env=secure_env(write_config(logs, global_max_sessions=3)))
    system.start_edge()
    system.wait_ready()
    yield system, redis
    codes = system.stop_all()
    redis.stop()
    assert codes == {"edge": 0}, codes


async def pings(client: ProtocolClient, count: int, every_s: float = 0.0, tag: str = "p") -> None:
    for n in range(count):
        await client.send({"type": "ping", "id": f"{tag}{n}"})
        if every_s:
            await asyncio.sleep(every_s)


async def recovers(client: ProtocolClient, tag: str) -> None:
    """The connection is still usable once the bucket has refilled: a ping gets its pong."""
    for n in range(50):
        await client.send({"type": "ping", "id": f"{tag}{n}"})
        try:
            await client.wait_type("pong", id=f"{tag}{n}", timeout=0.2)
            return
        except (asyncio.TimeoutError, TimeoutError):
            continue
    raise AssertionError("no pong after the flood")


def refusals(system, limit: str) -> float:
    """The edge's count of requests a limit refused."""
    return scrape(system.url() + "/metrics").get(f'parley_rate_limited_total{{limit="{limit}"}}', 0.0)


def rate_limited(client: ProtocolClient) -> list[dict]:
    return [e for e in client.of_type("error") if e["code"] == "rate_limited"]


async def flood_messages(system) -> None:
    before = refusals(system, "messages_per_second")
    flooder, bob = await started(system, "flooder"), await started(system, "bob")
    await asyncio.gather(pings(flooder, 300), pings(bob, 20, every_s=0.02, tag="b"))
    await bob.wait_type("pong", id="b19")
    await flooder.wait_for(lambda e: e.get("code") == "rate_limited")
    assert not rate_limited(bob) and len(bob.of_type("pong")) == 20
    assert len(flooder.of_type("pong")) < 300
    assert not any(e["fatal"] for e in rate_limited(flooder))
    await recovers(flooder, "after")
    assert refusals(system, "messages_per_second") > before
    await flooder.close()
    await bob.close()


async def test_messages_per_second(secure_parley):
    await flood_messages(secure_parley)


async def test_a_flood_of_bad_frames_is_held_to_messages_per_second(secure_parley):
    flooder, bob = await started(secure_parley, "flooder"), await started(secure_parley, "bob")
    for _ in range(300):
        await flooder.ws.send("{not json")
    await pings(bob, 20, every_s=0.02, tag="b")
    await bob.wait_type("pong", id="b19")
    await recovers(flooder, "after")
    invalid = [e for e in flooder.of_type("error") if e["code"] == "invalid_message"]
    assert 0 < len(invalid) < 300 and rate_limited(flooder) and not rate_limited(bob)
    await flooder.close()
    await bob.close()


async def test_audio_seconds_per_minute(secure_parley):
    talker, bob = await started(secure_parley, "talker"), await started(secure_parley, "bob")
    for _ in range(60):  # 6 s of audio against 3 s a minute; bob sends as much
        await talker.ws.send(SILENCE_100MS)
        await bob.ws.send(SILENCE_100MS)
    for client in (talker, bob):
        await client.send({"type": "ping", "id": "done"})
        await client.wait_type("pong", id="done")
    error = rate_limited(talker)[0]
    assert "audio seconds per minute" in error["message"] and not error["fatal"]
    assert not rate_limited(bob)
    assert refusals(secure_parley, "audio_seconds_per_minute") >= 1
    await talker.close()
    await bob.close()


async def test_new_connections_per_minute(secure_parley):
    for _ in range(3):
        (await started(secure_parley, "dialer")).drop()
    refused = await connect(secure_parley, api_key("dialer"))
    error = await refused.wait_type("error")
    assert error["code"] == "rate_limited" and error["fatal"] and "connections" in error["message"]
    assert (await refused.closed)[0] == 4429
    assert refusals(secure_parley, "connections_per_minute") >= 1
    (await started(secure_parley, "bob")).drop()  # another principal connects as usual


async def test_a_refused_realtime_connection_gets_a_realtime_error_and_4429(secure_parley):
    first = await connect(secure_parley, api_key("realtime_dialer"), path="/v1/realtime")
    await first.wait_type("session.created")
    await first.close()
    refused = await connect(secure_parley, api_key("realtime_dialer"), path="/v1/realtime")
    error = (await refused.wait_type("error"))["error"]
    assert error["code"] == "rate_limited" and error["type"] == "rate_limit_error"
    assert (await refused.closed)[0] == 4429


async def test_concurrent_sessions_and_release_on_every_path(secure_parley):
    first, second = await started(secure_parley, "pair"), await started(secure_parley, "pair")
    third = await connect(secure_parley, api_key("pair"))
    reply = await third.start(language="en", target_language="es")
    assert reply["code"] == "rate_limited" and reply["fatal"]
    assert (await third.closed)[0] == 4429
    others = [await started(secure_parley, "bob") for _ in range(3)]  # not slowed
    # A resume (here: on the same edge) reuses the session's place: no third slot needed.
    session = first.events[0]
    first.drop()
    resumed = await connect(secure_parley, api_key("pair"))
    await resumed.send({"type": "session.resume", "session_id": session["session_id"],
                        "resume_token": session["resume_token"], "last_seq": 0})
    await resumed.wait_type("session.started")
    # session.end, then a dropped connection: each frees its place.
    await resumed.send({"type": "session.end"})
    await resumed.wait_type("session.ended")
    second.drop()
    for client in [await start_when_free(secure_parley, "pair") for _ in range(2)] + others:
        await client.close()


async def start_when_free(system, principal: str) -> ProtocolClient:
    """A released place is free as soon as the edge has noticed the end: retry briefly."""
    for _ in range(50):
        client = await connect(system, api_key(principal))
        reply = await client.start(language="en", target_language="es")
        if reply["type"] == "session.started":
            return client
        await asyncio.sleep(0.1)
    raise AssertionError(f"{principal} never got a session back")


async def test_global_concurrent_sessions(edge_b):
    system, _ = edge_b
    held = [await started(system, "alice"), await started(system, "bob"), await started(system, "pair")]
    refused = await connect(system, api_key("alice"))
    reply = await refused.start(language="en", target_language="es")
    assert reply["code"] == "rate_limited" and "this service" in reply["message"]
    assert (await refused.closed)[0] == 4429
    assert refusals(system, "global_max_sessions") >= 1
    for client in held:
        await client.send({"type": "session.end"})
        await client.wait_type("session.ended")
    (await start_when_free(system, "alice")).drop()


async def test_limits_hold_from_memory_when_redis_stops(edge_b):
    system, redis = edge_b
    first = await start_when_free(system, "pair")
    redis.stop()
    second = await started(system, "pair")  # sessions go on without Redis
    third = await connect(system, api_key("pair"))
    reply = await third.start(language="en", target_language="es")
    assert reply["code"] == "rate_limited"  # the slots taken in Redis are mirrored in memory
    assert (await third.closed)[0] == 4429
    await first.close()
    await second.close()
    (await start_when_free(system, "bob")).drop()  # the global count (3) has room again
    await flood_messages(system)
    for _ in range(3):
        (await connect(system, api_key("dialer"))).drop()
    refused = await connect(system, api_key("dialer"))
    assert (await refused.wait_type("error"))["code"] == "rate_limited"
    assert (await refused.closed)[0] == 4429
    log = (system.log_dir / "edge.log").read_text()
    assert "rate limits are kept in this edge's memory" in log
    assert refusals(system, "max_sessions") >= 1
    assert scrape(system.url() + "/metrics")["parley_ratelimit_memory_total"] >= 1

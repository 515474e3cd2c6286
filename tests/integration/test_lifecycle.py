"""Session lifecycle on a real edge: idle timeout, maximum duration, and what is released
when a session ends, on every path (Redis keys, the STT owner's stream, the assistant's
conversation)."""

from __future__ import annotations

import asyncio
import time

import nats
import pytest
import redis.asyncio as aioredis

from services.edge.session import end_reason
from shared.audio import tone
from shared.subjects import Subjects
from tests.support.client import ProtocolClient
from tests.support.system import ParleySystem

PREFIX = "life"


@pytest.fixture(scope="module")
def short_lived(nats_server, redis_server, tmp_path_factory):
    system = ParleySystem(nats_server.url, redis_server.url, "bench", tmp_path_factory.mktemp("life-logs"), env={
        "PARLEY_PREFIX": PREFIX, "PARLEY_IDLE_TIMEOUT_S": "1.5", "PARLEY_MAX_SESSION_S": "4",
        "PARLEY_RESUME_WINDOW_S": "3",
    })
    system.start_all()
    yield system
    assert all(code == 0 for code in system.stop_all().values())


@pytest.mark.parametrize("idle_s, age_s, expected", [
    (0.0, 0.0, None), (1.4, 3.9, None), (1.5, 0.0, "idle_timeout"), (0.0, 4.0, "max_duration"),
    (9.0, 9.0, "max_duration"),
])
def test_end_reason(idle_s, age_s, expected):
    assert end_reason(idle_s, age_s, idle_timeout_s=1.5, max_session_s=4.0) == expected


async def test_an_idle_session_ends_and_pings_keep_one_alive(short_lived):
    idle = await ProtocolClient.connect(short_lived.ws_url())
    await idle.start(language="en", target_language="es")
    busy = await ProtocolClient.connect(short_lived.ws_url())
    await busy.start(language="en", target_language="es")
    for n in range(8):  # 2.4 s of pings: past the idle timeout
        await busy.send({"type": "ping", "id": n})
        await asyncio.sleep(0.3)
    ended = await idle.wait_type("session.ended")
    assert ended["reason"] == "idle_timeout"
    assert not busy.of_type("session.ended")
    await busy.close()


async def test_a_session_ends_at_its_maximum_duration_and_cannot_be_resumed(short_lived):
    client = await ProtocolClient.connect(short_lived.ws_url())
    started = await client.start(language="en", target_language="es")
    begun = time.monotonic()
    while not client.of_type("session.ended") and time.monotonic() - begun < 10:
        await client.send({"type": "ping"})
        await asyncio.sleep(0.3)
    assert client.of_type("session.ended")[0]["reason"] == "max_duration"
    again = await ProtocolClient.connect(short_lived.ws_url())
    await again.send({"type": "session.resume", "session_id": started["session_id"],
                      "resume_token": started["resume_token"], "last_seq": 0})
    error = await again.wait_type("error")
    assert error["code"] in ("session_not_found", "session_expired") and error["fatal"]


async def end(client: ProtocolClient, how: str) -> None:
    if how == "session.end":
        await client.send({"type": "session.end"})
        assert (await client.wait_type("session.ended"))["reason"] == "client_ended"
    elif how == "idle":
        assert (await client.wait_type("session.ended", timeout=10))["reason"] == "idle_timeout"
    elif how == "maximum duration":
        while not client.of_type("session.ended"):
            await client.send({"type": "ping"})
            await asyncio.sleep(0.3)
        assert client.of_type("session.ended")[0]["reason"] == "max_duration"
    else:  # the connection is lost and nobody resumes within the window (3 s here)
        client.drop()
        await asyncio.sleep(3.5)


@pytest.mark.parametrize("how", ["session.end", "idle", "maximum duration", "resume window lapses"])
async def test_every_way_a_session_ends_releases_state_stream_and_conversation(short_lived, redis_server, how):
    client = await ProtocolClient.connect(short_lived.ws_url())
    started = await client.start(mode="assistant", language="en")
    sid = started["session_id"]
    await client.stream(tone(220, 1.0, 16000) + b"\x00\x00" * 8000, realtime=False)
    await client.wait_type("response.done")  # the local keyword engine answered
    r = aioredis.from_url(redis_server.url)
    assert await r.exists(f"{PREFIX}:session:{sid}") and await r.exists(f"{PREFIX}:conv:{sid}")
    nc = await nats.connect(short_lived.nats_url)
    leases = []

    async def on_lease(msg) -> None:
        leases.append(time.monotonic())

    await nc.subscribe(Subjects(PREFIX).stt_lease(sid), cb=on_lease)
    await end(client, how)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (await r.exists(f"{PREFIX}:conv:{sid}") or await r.exists(f"{PREFIX}:session:{sid}")):
        await asyncio.sleep(0.1)
    assert not await r.exists(f"{PREFIX}:session:{sid}")
    assert not await r.exists(f"{PREFIX}:conv:{sid}")
    ended_at = time.monotonic()
    await asyncio.sleep(1.5)  # more than a lease period (3 s / 3)
    assert not [t for t in leases if t > ended_at + 0.5], "the STT owner still holds the session"
    await nc.close()
    await r.aclose()

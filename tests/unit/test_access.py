"""The edge's door (services/edge/access.py) on the in-memory limiter: no sleeps."""

from __future__ import annotations

import time

from services.edge import wire
from services.edge.access import Access
from services.edge.auth import AuthConfig, Principal, PrincipalLimits, hash_api_key
from services.edge.ratelimit import MemoryLimiter
from services.edge.ratelimit_redis import FallbackLimiter

NOW = [0.0]
LIMITS = PrincipalLimits(max_sessions=1, connections_per_minute=2, audio_seconds_per_minute=2,
                         messages_per_second=3)
CONFIG = AuthConfig(api_keys={hash_api_key("k"): "p"}, principals={"p": Principal("p", limits=LIMITS)},
                    global_max_sessions=2)


def access() -> Access:
    return Access(CONFIG, FallbackLimiter(None, MemoryLimiter(lambda: NOW[0])), clock=time.time)


class Connection:  # stands for a websockets connection (weakly referenced)
    pass


def test_handshake_remembers_the_principal_per_connection():
    door, conn = access(), Connection()
    assert not door.authenticate(conn, {}, "/v1/stream")
    assert not door.authenticate(conn, {"Authorization": "Bearer nope"}, "/v1/stream")
    assert door.authenticate(conn, {}, "/v1/stream?token=k")
    assert door.principal_of(conn).name == "p"
    assert door.principal_of(conn) is None  # taken once; never anonymous while auth is on
    assert Access.disabled().principal_of(conn).name == "anonymous"


async def test_connections_per_minute():
    door, p = access(), CONFIG.principal("p")
    assert [await door.admit_connection(p) for _ in range(3)][:2] == [None, None]
    assert "connections a minute" in await door.admit_connection(p)
    NOW[0] += 30  # one token back
    assert await door.admit_connection(p) is None
    assert await door.admit_connection(CONFIG.principal("someone-else")) is None  # no limit


async def test_session_slots_per_principal_and_global():
    door, p = access(), CONFIG.principal("p")
    q, r = (Principal(n, limits=PrincipalLimits(max_sessions=5)) for n in "qr")
    slot, refusal = await door.take_slot(p, "s1")
    assert slot and refusal is None
    assert "this principal" in (await door.take_slot(p, "s2"))[1]
    resumed, refusal = await door.take_slot(p, "s1")  # a resume of the same session fits
    assert resumed and refusal is None
    q1, _ = await door.take_slot(q, "s3")
    assert "this service" in (await door.take_slot(r, "s4"))[1]  # global: s1 and s3
    await door.release(slot)  # the old connection's release leaves the resumed one counted
    assert "this service" in (await door.take_slot(r, "s4"))[1]
    await door.release(resumed)
    r1, refusal = await door.take_slot(r, "s4")
    assert r1 and refusal is None
    for held in (q1, r1):
        await door.release(held)
    free, refusal = await door.take_slot(Principal("free"), "s5")  # no own limit; the global one
    assert free and refusal is None
    await door.release(free)


async def test_quota_drops_the_excess_and_tells_once():
    door, told = access(), []

    async def tell(code, message):
        told.append((code, message))

    quota = door.quota(CONFIG.principal("p"))
    ping = wire.Ping(id=None)
    verdicts = [await quota.admit(ping, 16000, tell) for _ in range(10)]
    assert verdicts == [True] * 3 + [False] * 7
    assert told == [("rate_limited", "over the limit of messages per second; the excess is dropped")]
    assert await quota.admit(wire.SessionEnd(), 16000, tell)  # ending is always allowed
    NOW[0] += 10
    second = wire.AudioAppend(b"\x00\x00" * 16000)  # 1 s at 16 kHz
    assert [await quota.admit(second, 16000, tell) for _ in range(3)] == [True, True, False]
    assert await quota.admit(ping, 16000, tell)  # the message bucket took nothing for the refused audio


async def test_no_limits_means_no_checks():
    door = access()
    quota = door.quota(CONFIG.principal("free"))
    assert all([await quota.admit(wire.Ping(id=1), 16000, None) for _ in range(1000)])


def test_the_start_up_log_says_whether_auth_is_on_and_warns_off_loopback():
    def levels(door, host):
        return [(level, text.split(":")[0]) for level, text in door.describe(host)]

    disabled = Access.disabled()
    assert levels(disabled, "127.0.0.1")[0] == (20, "auth is disabled")
    assert (30, "AUTH IS DISABLED AND THE EDGE LISTENS ON 0.0.0.0") in levels(disabled, "0.0.0.0")
    enabled = access().describe("0.0.0.0")
    assert enabled[0] == (20, "auth is enabled: 1 API keys") and all(level == 20 for level, _ in enabled)

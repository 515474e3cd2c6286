"""Token buckets and session leases (services/edge/ratelimit.py): tables, time passed in."""

from __future__ import annotations

import pytest

from services.edge.ratelimit import OK, Bucket, BucketRequest, LeaseTable, MemoryLimiter, Scope, level, take

MSG = BucketRequest("msg", rate_per_s=2.0, capacity=4.0, cost=1.0)
AUDIO = BucketRequest("audio", rate_per_s=1.0, capacity=5.0, cost=2.0)


@pytest.mark.parametrize("bucket,now,expected", [
    (None, 0.0, 4.0),  # a bucket never used is full
    (Bucket(0.0, 10.0), 10.0, 0.0),
    (Bucket(0.0, 10.0), 11.0, 2.0),  # 2 tokens a second
    (Bucket(1.0, 10.0), 100.0, 4.0),  # never above capacity
    (Bucket(1.0, 10.0), 5.0, 1.0),  # a clock that went backwards adds nothing
])
def test_level(bucket, now, expected):
    assert level(bucket, MSG.rate_per_s, MSG.capacity, now) == expected


def run(requests_at: list[tuple[float, list[BucketRequest]]]) -> list[int]:
    """Replay (time, requests) through `take`, carrying the state; the verdict of each."""
    buckets: dict[str, Bucket] = {}
    verdicts = []
    for now, requests in requests_at:
        refused, updated = take(buckets, requests, now)
        buckets.update(updated)
        verdicts.append(refused)
    return verdicts


@pytest.mark.parametrize("name,script,expected", [
    ("burst up to capacity, then refused", [(0.0, [MSG])] * 5, [OK, OK, OK, OK, 0]),
    ("refill lets one more through", [(0.0, [MSG])] * 4 + [(0.4, [MSG]), (0.5, [MSG]), (0.5, [MSG])],
     [OK, OK, OK, OK, 0, OK, 0]),
    ("the second bucket refuses: index 1", [(0.0, [MSG, AUDIO])] * 3, [OK, OK, 1]),
    ("a refused pair takes nothing from the first bucket",
     [(0.0, [MSG, AUDIO])] * 3 + [(0.0, [MSG])] * 3, [OK, OK, 1, OK, OK, 0]),
    ("a cost above the level is refused, a smaller one passes",
     [(0.0, [BucketRequest("a", 1, 5, 4)]), (0.0, [BucketRequest("a", 1, 5, 2)]),
      (0.0, [BucketRequest("a", 1, 5, 1)])], [OK, 0, OK]),
])
def test_take(name, script, expected):
    assert run(script) == expected


def test_a_refused_take_returns_no_state():
    refused, updated = take({"msg": Bucket(0.0, 0.0)}, [MSG], 0.0)
    assert refused == 0 and updated == {}


ONE = [Scope("p", 2)]
TWO = [Scope("p", 2), Scope("global", 3)]


def test_leases_count_to_the_limit_and_expire():
    table = LeaseTable()
    assert table.acquire("s1", "o1", ONE, ttl_s=60, now=0) == OK
    assert table.acquire("s2", "o2", ONE, ttl_s=60, now=0) == OK
    assert table.acquire("s3", "o3", ONE, ttl_s=60, now=1) == 0
    assert table.count("p", 59) == 2
    assert table.acquire("s3", "o3", ONE, ttl_s=60, now=60) == OK  # the others lapsed
    assert table.count("p", 60) == 1


def test_the_first_full_scope_is_named_and_nothing_is_taken():
    table = LeaseTable()
    for n in range(3):
        assert table.acquire(f"x{n}", "o", [Scope(f"q{n}", 5), Scope("global", 3)], 60, 0) == OK
    assert table.acquire("s1", "o1", TWO, 60, 0) == 1  # the global scope is full
    assert table.count("p", 0) == 0


def test_a_resume_reuses_the_lease_and_the_old_owner_cannot_release_it():
    table = LeaseTable()
    table.acquire("s1", "old", ONE, 60, 0)
    table.acquire("s2", "o2", ONE, 60, 0)
    assert table.acquire("s1", "new", ONE, 60, 1) == OK  # full, but s1 already holds a place
    assert table.count("p", 1) == 2
    assert table.release("s1", "old", ONE) is False
    assert table.renew("s1", "old", ONE, 60, 2) is False
    assert table.count("p", 2) == 2
    assert table.release("s1", "new", ONE) is True
    assert table.count("p", 2) == 1


def test_renew_extends_and_restores_a_lapsed_lease():
    table = LeaseTable()
    table.acquire("s1", "o1", ONE, 10, 0)
    assert table.renew("s1", "o1", ONE, 10, 9)
    assert table.count("p", 18) == 1
    assert table.count("p", 19) == 0
    assert table.renew("s1", "o1", ONE, 10, 20)  # put back, as after a Redis restart
    assert table.count("p", 20) == 1


def test_force_ignores_the_limit():
    table = LeaseTable()
    table.acquire("s1", "o", ONE, 60, 0)
    table.acquire("s2", "o", ONE, 60, 0)
    assert table.acquire("s3", "o", ONE, 60, 0, force=True) == OK
    assert table.count("p", 0) == 3


async def test_memory_limiter_uses_its_clock_and_forgets_full_buckets(monkeypatch):
    now = [0.0]
    limiter = MemoryLimiter(lambda: now[0])
    assert [await limiter.take([MSG]) for _ in range(5)] == [OK, OK, OK, OK, 0]
    now[0] = 0.5
    assert await limiter.take([MSG]) == OK
    monkeypatch.setattr("services.edge.ratelimit.MAX_IDLE_BUCKETS", 1)
    now[0] = 100.0
    await limiter.take([BucketRequest("other", 1, 1, 1)])
    assert "msg" not in limiter._buckets  # full again: it held nothing worth keeping
    assert await limiter.acquire("s1", "o", ONE, 60) == OK
    assert await limiter.release("s1", "o", ONE)

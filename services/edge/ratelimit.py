"""Rate limits: token buckets and session leases.

The core (`take`, `LeaseTable`) is pure: state in, state out, time passed in. Around it,
`MemoryLimiter` keeps the state of one process; `ratelimit_redis.RedisLimiter` keeps the
same state in Redis with Lua scripts that do exactly what the core does, atomically, so
every edge shares one count.

- A bucket holds at most `capacity` tokens and refills at `rate_per_s`; a request that
  would take more than it holds is refused and takes nothing. Several buckets are taken
  together or not at all (a message and its audio).
- A lease stands for one live session in one or more scopes (a principal, the whole
  system), each with its own maximum. Leases expire unless renewed, so a crashed edge
  leaks nothing for long. A session holds one lease per scope, named by its id: taking it
  again (a resume on another edge) does not count it twice, and hands it to the new owner
  (the old connection's release then does nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

OK = -1  # `take` / `acquire`: nothing refused


@dataclass(frozen=True)
class BucketRequest:
    key: str
    rate_per_s: float
    capacity: float
    cost: float


@dataclass(frozen=True)
class Bucket:
    tokens: float
    at: float


def level(bucket: Bucket | None, rate_per_s: float, capacity: float, now: float) -> float:
    """Tokens held at `now` (a missing bucket is full; time never runs backwards)."""
    if bucket is None:
        return capacity
    return min(capacity, bucket.tokens + max(0.0, now - bucket.at) * rate_per_s)


def take(buckets: dict[str, Bucket], requests: Sequence[BucketRequest],
         now: float) -> tuple[int, dict[str, Bucket]]:
    """Index of the first request refused (or OK) and the buckets' new states (only the
    requests' keys; unchanged when one is refused)."""
    updated: dict[str, Bucket] = {}
    for index, r in enumerate(requests):
        tokens = level(updated.get(r.key) or buckets.get(r.key), r.rate_per_s, r.capacity, now)
        if tokens < r.cost:
            return index, {}
        updated[r.key] = Bucket(tokens - r.cost, now)
    return OK, updated


def full_at(bucket: Bucket, rate_per_s: float, capacity: float) -> float:
    """When the bucket is full again, and so may be forgotten."""
    return bucket.at + max(0.0, capacity - bucket.tokens) / rate_per_s


@dataclass(frozen=True)
class Scope:
    key: str
    limit: int


class LeaseTable:
    """Leases per scope: scope → member → (owner, expires)."""

    def __init__(self) -> None:
        self._scopes: dict[str, dict[str, tuple[str, float]]] = {}

    def count(self, scope: str, now: float) -> int:
        self._expire(scope, now)
        return len(self._scopes.get(scope, {}))

    def acquire(self, member: str, owner: str, scopes: Sequence[Scope], ttl_s: float, now: float,
                force: bool = False) -> int:
        """Index of the first scope that is full (or OK, and the lease is held in every one)."""
        for index, scope in enumerate(scopes):
            self._expire(scope.key, now)
            held = self._scopes.get(scope.key, {})
            if not force and member not in held and len(held) >= scope.limit:
                return index
        for scope in scopes:
            self._scopes.setdefault(scope.key, {})[member] = (owner, now + ttl_s)
        return OK

    def renew(self, member: str, owner: str, scopes: Sequence[Scope], ttl_s: float, now: float) -> bool:
        """Extend the lease (or put it back, if it lapsed) unless another owner took it."""
        if self._other_owner(member, owner, scopes):
            return False
        for scope in scopes:
            self._scopes.setdefault(scope.key, {})[member] = (owner, now + ttl_s)
        return True

    def release(self, member: str, owner: str, scopes: Sequence[Scope]) -> bool:
        if self._other_owner(member, owner, scopes):
            return False  # a resume elsewhere holds it now
        for scope in scopes:
            held = self._scopes.get(scope.key, {})
            held.pop(member, None)
            if not held:
                self._scopes.pop(scope.key, None)
        return True

    def _other_owner(self, member: str, owner: str, scopes: Sequence[Scope]) -> bool:
        return any(self._scopes.get(s.key, {}).get(member, (owner, 0.0))[0] != owner for s in scopes)

    def _expire(self, scope: str, now: float) -> None:
        held = self._scopes.get(scope)
        if held:
            for member in [m for m, (_, expires) in held.items() if expires <= now]:
                del held[member]


class Limiter(Protocol):
    async def take(self, requests: Sequence[BucketRequest]) -> int: ...
    async def acquire(self, member: str, owner: str, scopes: Sequence[Scope], ttl_s: float) -> int: ...
    async def renew(self, member: str, owner: str, scopes: Sequence[Scope], ttl_s: float) -> bool: ...
    async def release(self, member: str, owner: str, scopes: Sequence[Scope]) -> bool: ...


MAX_IDLE_BUCKETS = 10000  # beyond this many, full buckets are forgotten (they hold nothing)


class MemoryLimiter:
    """The limits of one process: alone (no Redis), or while Redis is down."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._buckets: dict[str, Bucket] = {}
        self._rates: dict[str, tuple[float, float]] = {}
        self.leases = LeaseTable()

    async def take(self, requests: Sequence[BucketRequest]) -> int:
        return self.take_now(requests)

    def take_now(self, requests: Sequence[BucketRequest]) -> int:
        now = self._clock()
        refused, updated = take(self._buckets, requests, now)
        self._buckets.update(updated)
        for r in requests:
            self._rates[r.key] = (r.rate_per_s, r.capacity)
        if len(self._buckets) > MAX_IDLE_BUCKETS:
            self._forget_full(now)
        return refused

    def _forget_full(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if full_at(b, *self._rates[k]) <= now]:
            del self._buckets[key]
            del self._rates[key]

    async def acquire(self, member: str, owner: str, scopes: Sequence[Scope], ttl_s: float,
                      force: bool = False) -> int:
        return self.leases.acquire(member, owner, scopes, ttl_s, self._clock(), force)

    async def renew(self, member: str, owner: str, scopes: Sequence[Scope], ttl_s: float) -> bool:
        return self.leases.renew(member, owner, scopes, ttl_s, self._clock())

    async def release(self, member: str, owner: str, scopes: Sequence[Scope]) -> bool:
        return self.leases.release(member, owner, scopes)

"""What the meter's usage costs, and running totals per session and per principal.

`PriceTable` reads shared/prices.toml (or `PARLEY_PRICES`) and prices one
`shared.usage.Usage`; it is pure. `CostLedger` adds each priced usage to two Redis hashes —
``<prefix>:cost:session:<sid>`` and ``<prefix>:cost:principal:<principal>`` — in one
MULTI/EXEC, so totals never show half an update; without Redis, or while Redis fails, it
adds to process memory instead and folds that back into Redis once Redis answers again.
After a failure Redis is left alone for `redis_retry_s` (a breaker), so a dead Redis costs
one timeout, not one per add.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
import tomllib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.breaker import BreakerConfig, BreakerState, CircuitBreaker
from shared.usage import Usage

log = logging.getLogger("parley.cost")

DEFAULT_PRICES = Path(__file__).with_name("prices.toml")
PRICES_ENV = "PARLEY_PRICES"

# unit → (the Usage field it meters, how many of that field one priced unit is)
UNITS: dict[str, tuple[str, float]] = {
    "audio_hour": ("audio_seconds", 3600.0),
    "audio_minute": ("audio_seconds", 60.0),
    "input_tokens_1m": ("input_tokens", 1e6),
    "output_tokens_1m": ("output_tokens", 1e6),
    "characters_1m": ("characters", 1e6),
}
STATUSES = frozenset({"verified", "unverified"})


class PriceNotFound(LookupError):
    """No price for this provider and model: the table needs an entry (or a "*")."""


@dataclass(frozen=True)
class Price:
    provider: str
    model: str  # "*" for every model of the provider
    capability: str
    unit: str
    usd: float
    checked: datetime.date
    status: str
    source: str
    note: str = ""

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"{self.provider}/{self.model}: unknown unit {self.unit!r}")
        if self.usd < 0:
            raise ValueError(f"{self.provider}/{self.model}: negative price")
        if self.status not in STATUSES:
            raise ValueError(f"{self.provider}/{self.model}: status must be one of "
                             f"{sorted(STATUSES)}")
        if not isinstance(self.checked, datetime.date):
            raise ValueError(f"{self.provider}/{self.model}: checked must be a TOML date")

    def cost_usd(self, usage: Usage) -> float:
        field, per = UNITS[self.unit]
        return getattr(usage, field) / per * self.usd


class PriceTable:
    def __init__(self, prices: Iterable[Price]) -> None:
        self._by_model: dict[tuple[str, str], list[Price]] = defaultdict(list)
        for price in prices:
            entries = self._by_model[(price.provider, price.model)]
            if any(p.unit == price.unit for p in entries):
                raise ValueError(f"{price.provider}/{price.model}: two prices for {price.unit}")
            entries.append(price)

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        """`path`, else $PARLEY_PRICES, else the table shipped beside this module."""
        chosen = Path(path or os.environ.get(PRICES_ENV) or DEFAULT_PRICES)
        return cls.from_toml(chosen.read_text(encoding="utf-8"))

    @classmethod
    def from_toml(cls, text: str) -> PriceTable:
        return cls(Price(**entry) for entry in tomllib.loads(text).get("price", []))

    def prices(self, provider: str, model: str) -> tuple[Price, ...]:
        found = self._by_model.get((provider, model)) or self._by_model.get((provider, "*"))
        if found is None:
            raise PriceNotFound(f"no price for {provider}/{model}")
        return tuple(found)

    def cost_usd(self, usage: Usage) -> float:
        """USD for one usage record; units the model has no price for are free."""
        return sum(p.cost_usd(usage) for p in self.prices(usage.provider, usage.model))

    def entries(self) -> list[Price]:
        return [p for entries in self._by_model.values() for p in entries]


@dataclass(frozen=True)
class Totals:
    usd: float = 0.0
    audio_seconds: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    characters: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @classmethod
    def of(cls, usage: Usage, usd: float) -> Totals:
        return cls(usd, usage.audio_seconds, usage.input_tokens, usage.output_tokens,
                   usage.characters)

    @classmethod
    def from_hash(cls, raw: dict) -> Totals:
        """From HGETALL's reply (bytes keys and values; int() and float() take bytes)."""
        v = {(k.decode() if isinstance(k, bytes) else k): value for k, value in raw.items()}
        return cls(float(v.get("usd", 0)), float(v.get("audio_seconds", 0)),
                   int(v.get("input_tokens", 0)), int(v.get("output_tokens", 0)),
                   int(v.get("characters", 0)))


class CostLedger:
    """Totals per session and per principal; Redis when given and up, memory otherwise."""

    def __init__(self, redis_url: str | None, *, prices: PriceTable | None = None,
                 prefix: str = "parley", session_ttl_s: int = 7 * 86400,
                 redis_retry_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.prices = prices or PriceTable.load()
        self._prefix, self._session_ttl_s, self._clock = prefix, session_ttl_s, clock
        self._redis = (aioredis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
                       if redis_url else None)
        self._redis_breaker = CircuitBreaker(BreakerConfig(
            failure_threshold=1, reset_timeout_s=redis_retry_s,
            max_reset_timeout_s=max(redis_retry_s, 60.0)))
        self._pending: dict[str, Totals] = defaultdict(Totals)  # by hash key: not yet in Redis
        self._unpriced: set[tuple[str, str]] = set()

    @property
    def degraded(self) -> bool:
        """True without Redis, and while a configured Redis is skipped after a failure."""
        return self._redis is None or self._redis_breaker.state is not BreakerState.CLOSED

    def session_key(self, session_id: str) -> str:
        return f"{self._prefix}:cost:session:{session_id}"

    def principal_key(self, principal: str) -> str:
        return f"{self._prefix}:cost:principal:{principal}"

    async def add(self, session_id: str, principal: str, usage: Usage) -> float:
        """Add one usage to both totals; returns its cost (0 for a model with no price)."""
        usd = self._price(usage)
        delta = Totals.of(usage, usd)
        keys = (self.session_key(session_id), self.principal_key(principal))
        for key in keys:
            self._pending[key] += delta
        await self._flush()
        return usd

    async def add_all(self, session_id: str, principal: str, usages: Iterable[Usage]) -> float:
        total = 0.0
        for usage in usages:
            total += await self.add(session_id, principal, usage)
        return total

    async def totals(self, session_id: str) -> Totals:
        return await self._read(self.session_key(session_id))

    async def principal_totals(self, principal: str) -> Totals:
        return await self._read(self.principal_key(principal))

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    def _price(self, usage: Usage) -> float:
        try:
            return self.prices.cost_usd(usage)
        except PriceNotFound:
            if (usage.provider, usage.model) not in self._unpriced:  # once, not per call
                self._unpriced.add((usage.provider, usage.model))
                log.warning("no price for %s/%s; counted at $0", usage.provider, usage.model)
            return 0.0

    async def _flush(self) -> None:
        """Move everything pending into Redis in one transaction, or keep it for later."""
        if not self._pending or not self._redis_allows():
            return
        # Taken out before the await: a concurrent add() must not send the same amounts.
        pending, self._pending = self._pending, defaultdict(Totals)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for key, delta in pending.items():
                    _queue_increments(pipe, key, delta)
                    if key.startswith(self.session_key("")):
                        pipe.expire(key, self._session_ttl_s)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            for key, delta in pending.items():
                self._pending[key] += delta
            self._redis_failed(exc)
            return
        self._redis_answered()

    async def _read(self, key: str) -> Totals:
        stored = Totals()
        await self._flush()
        if self._redis_allows():
            try:
                stored = Totals.from_hash(await self._redis.hgetall(key))
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
            else:
                self._redis_answered()
        return stored + self._pending.get(key, Totals())

    def _redis_allows(self) -> bool:
        return self._redis is not None and self._redis_breaker.allow(self._clock())

    def _redis_failed(self, exc: BaseException) -> None:
        if self._redis_breaker.state is BreakerState.CLOSED:
            log.warning("redis unavailable (%s); cost totals kept in memory", type(exc).__name__)
        self._redis_breaker.record_failure(self._clock())

    def _redis_answered(self) -> None:
        if self._redis_breaker.state is BreakerState.HALF_OPEN:
            log.info("redis is back; cost totals kept in memory go to it")
        self._redis_breaker.record_success(self._clock())


def _queue_increments(pipe, key: str, delta: Totals) -> None:
    pipe.hincrbyfloat(key, "usd", delta.usd)
    pipe.hincrbyfloat(key, "audio_seconds", delta.audio_seconds)
    for name in ("input_tokens", "output_tokens", "characters"):
        pipe.hincrby(key, name, getattr(delta, name))

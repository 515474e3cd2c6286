"""A circuit breaker as a pure object: time comes in as an argument, nothing waits or sleeps.

States: ``closed`` (calls flow), ``open`` (calls are refused until the open period ends),
``half_open`` (exactly one probe call is let through; its outcome closes or re-opens).

- ``failure_threshold`` consecutive failures open the breaker; a fatal failure (bad key,
  exhausted quota: retrying cannot help) opens it at once.
- The first open period is ``reset_timeout_s``; every failed probe doubles it (by
  ``backoff_factor``) up to ``max_reset_timeout_s``; closing resets it.
- A probe that never reports back (its caller was cancelled) does not wedge the breaker:
  after another ``reset_timeout_s`` a new probe is let through.

Every state change is queued as a `Transition`; the caller drains them with
`take_transitions()` to log and export metrics, so this module does no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class BreakerState(str, enum.Enum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"

    @property
    def gauge_value(self) -> int:
        """0 closed, 1 half-open, 2 open: the value of `parley_breaker_state`."""
        return {"closed": 0, "half_open": 1, "open": 2}[self.value]


@dataclass(frozen=True)
class BreakerConfig:
    failure_threshold: int = 3
    reset_timeout_s: float = 30.0
    max_reset_timeout_s: float = 300.0
    backoff_factor: float = 2.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if self.reset_timeout_s <= 0:
            raise ValueError("reset_timeout_s must be positive")
        if self.max_reset_timeout_s < self.reset_timeout_s:
            raise ValueError("max_reset_timeout_s must be at least reset_timeout_s")
        if self.backoff_factor < 1:
            raise ValueError("backoff_factor must be at least 1")


@dataclass(frozen=True)
class Transition:
    at: float
    old: BreakerState
    new: BreakerState
    reason: str  # "failures", "fatal", "probe", "probe_ok", "probe_failed"


class CircuitBreaker:
    def __init__(self, config: BreakerConfig | None = None) -> None:
        self.config = config or BreakerConfig()
        self._state = BreakerState.CLOSED
        self._failures = 0  # consecutive, while closed
        self._reopens = 0  # failed probes since the breaker last closed
        self._opened_at = 0.0
        self._probe_at = 0.0  # when the probe in flight was let through
        self._pending: list[Transition] = []

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def open_period_s(self) -> float:
        """How long the current (or next) open period lasts."""
        c = self.config
        return min(c.reset_timeout_s * c.backoff_factor**self._reopens, c.max_reset_timeout_s)

    def probe_due(self, now: float) -> bool:
        """True when `allow(now)` would let a probe through (open period over, or probe lost)."""
        if self._state is BreakerState.OPEN:
            return now >= self._opened_at + self.open_period_s
        if self._state is BreakerState.HALF_OPEN:
            return now >= self._probe_at + self.config.reset_timeout_s
        return False

    def allow(self, now: float) -> bool:
        """May a call go through now? In half-open, only the one probe may."""
        if self._state is BreakerState.CLOSED:
            return True
        if not self.probe_due(now):
            return False
        self._move(now, BreakerState.HALF_OPEN, "probe")
        self._probe_at = now
        return True

    def record_success(self, now: float) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._reopens = 0
            self._move(now, BreakerState.CLOSED, "probe_ok")
        # While open, a late success belongs to a call let through before the breaker
        # opened: it proves little, so the open period runs its course.
        self._failures = 0

    def record_failure(self, now: float, *, fatal: bool = False) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._reopens += 1
            self._open(now, "probe_failed")
        elif self._state is BreakerState.CLOSED:
            self._failures += 1
            if fatal or self._failures >= self.config.failure_threshold:
                self._open(now, "fatal" if fatal else "failures")
        # While open: a late failure of an earlier call changes nothing.

    def take_transitions(self) -> list[Transition]:
        """The state changes since the last call, oldest first."""
        pending, self._pending = self._pending, []
        return pending

    def _open(self, now: float, reason: str) -> None:
        self._failures = 0
        self._opened_at = now
        self._move(now, BreakerState.OPEN, reason)

    def _move(self, now: float, new: BreakerState, reason: str) -> None:
        if new is not self._state:
            self._pending.append(Transition(now, self._state, new, reason))
            self._state = new

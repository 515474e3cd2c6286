"""What the breakers and fallback chains show to operators: log lines and Prometheus series.

Logger ``parley.resilience``. Lines name the capability, the provider, the state and the
reason, never a key, a text or audio.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import time

from prometheus_client import Counter, Gauge, Histogram

from shared.breaker import BreakerState, Transition

log = logging.getLogger("parley.resilience")

BREAKER_STATE = Gauge(
    "parley_breaker_state",
    "Circuit breaker state per provider: 0 closed, 1 half-open, 2 open",
    ["provider", "capability"],
)
FALLBACK_TOTAL = Counter(
    "parley_fallback_total",
    "Calls served by a provider other than the chain's preferred one",
    ["capability", "provider"],
)


PROVIDER_CALLS = Counter(
    "parley_provider_calls_total",
    "Provider calls through a fallback chain, by outcome (ok, or the error code)",
    ["capability", "provider", "outcome"],
)
PROVIDER_SECONDS = Histogram(
    "parley_provider_seconds",
    "Time a provider took to answer (a stream: to its first result), retries included",
    ["capability", "provider"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def observe_call(capability: str, provider: str, outcome: str, started: float) -> None:
    """One call that began at `started` (time.perf_counter) ended with `outcome`."""
    PROVIDER_CALLS.labels(capability, provider, outcome).inc()
    PROVIDER_SECONDS.labels(capability, provider).observe(time.perf_counter() - started)


def export_state(capability: str, provider: str, state: BreakerState) -> None:
    BREAKER_STATE.labels(provider=provider, capability=capability).set(state.gauge_value)


def report_transitions(capability: str, provider: str, transitions: Iterable[Transition]) -> None:
    """Log each breaker transition and export the state it ended in."""
    last = None
    for t in transitions:
        level = logging.WARNING if t.new is BreakerState.OPEN else logging.INFO
        log.log(level, "%s provider %s: breaker %s → %s (%s)",
                capability, provider, t.old.value, t.new.value, t.reason)
        last = t.new
    if last is not None:
        export_state(capability, provider, last)


def count_fallback(capability: str, provider: str) -> None:
    FALLBACK_TOTAL.labels(capability=capability, provider=provider).inc()

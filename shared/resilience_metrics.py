"""What the breakers and fallback chains show to operators: log lines and Prometheus series.

Logger ``parley.resilience``. Lines name the capability, the provider, the state and the
reason, never a key, a text or audio.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from prometheus_client import Counter, Gauge

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

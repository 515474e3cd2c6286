"""The machinery under every fallback chain (shared/fallback.py): who served a call, which
notices a client is due, one breaker per provider, and the background prober.

`Chain`'s methods without a leading underscore are meant for the chains and their
sessions only; a worker uses the chains' Protocol methods, `states()` and `served_by()`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from shared.breaker import BreakerConfig, BreakerState, CircuitBreaker
from shared.errors import (
    ParleyError,
    ProviderAuthError,
    ProviderError,
    ProviderQuotaError,
)
from shared.languages import ANY, primary_tag
from shared.resilience_metrics import count_fallback, export_state, observe_call, report_transitions
from shared.retry import RetryPolicy

log = logging.getLogger("parley.resilience")


@dataclass(frozen=True)
class Served:
    capability: str  # "translate", "tts", "stt"
    provider: str | None  # who served the last call; None when nobody could
    preferred: str | None  # the first provider of the chain that supports the request

    @property
    def fallback(self) -> bool:
        return self.provider is not None and self.provider != self.preferred


SERVED_BY: ContextVar[Served | None] = ContextVar("parley_served_by", default=None)


def served_by() -> Served | None:
    """Who served the last chain call made in this context (see shared/fallback.py)."""
    return SERVED_BY.get()


class FallbackNotices:
    """Pure: per key (a listener or session) and capability, which notice is due.

    Call `forget(key)` when the listener leaves, or the table grows with every session.
    """

    def __init__(self) -> None:
        self._on_fallback: dict[str, dict[str, str]] = {}

    def observe(self, key: str, served: Served | None) -> str | None:
        """"fallback" when a fallback starts serving `key` (again, or another one),
        "recovered" when the preferred provider serves it again, else None."""
        if served is None or served.provider is None:
            return None
        current = self._on_fallback.setdefault(key, {})
        if served.fallback:
            if current.get(served.capability) == served.provider:
                return None
            current[served.capability] = served.provider
            return "fallback"
        return "recovered" if current.pop(served.capability, None) is not None else None

    def forget(self, key: str) -> None:
        self._on_fallback.pop(key, None)


def is_fatal(exc: BaseException) -> bool:
    """Errors that retrying cannot mend: they open the provider's breaker at once."""
    return isinstance(exc, (ProviderAuthError, ProviderQuotaError))


def speaks(languages: frozenset[str], language: str) -> bool:
    return ANY in languages or primary_tag(language) in languages


def probe_language(languages: frozenset[str]) -> str:
    return "en" if speaks(languages, "en") else sorted(languages - {ANY})[0]


def member_keys(providers: Sequence) -> list[str]:
    """Provider names, made unique (two OpenAI translators with different models)."""
    names = [p.name for p in providers]
    keys = []
    for i, p in enumerate(providers):
        model = getattr(p, "model", None)
        keys.append(p.name if names.count(p.name) == 1 else f"{p.name}:{model or i}")
    return keys


class Member:
    """One provider and its breaker; every transition is logged and exported."""

    def __init__(self, capability: str, key: str, provider, config: BreakerConfig, clock) -> None:
        self.capability, self.key, self.provider = capability, key, provider
        self.breaker = CircuitBreaker(config)
        self._clock = clock
        export_state(capability, key, BreakerState.CLOSED)

    def allow(self) -> bool:
        allowed = self.breaker.allow(self._clock())
        self._report()
        return allowed

    def succeeded(self) -> None:
        self.breaker.record_success(self._clock())
        self._report()

    def failed(self, exc: BaseException) -> None:
        log.warning("%s provider %s failed: %s", self.capability, self.key, type(exc).__name__)
        self.breaker.record_failure(self._clock(), fatal=is_fatal(exc))
        self._report()

    def _report(self) -> None:
        report_transitions(self.capability, self.key, self.breaker.take_transitions())


class Chain:
    """What the three chains share: members in order, breakers, the background prober."""

    capability = ""

    def __init__(self, providers: Sequence, *, clock: Callable[[], float] = time.monotonic,
                 probe_interval_s: float = 5.0, breaker: BreakerConfig | None = None,
                 retry: RetryPolicy | None = None) -> None:
        if not providers:
            raise ValueError("a fallback chain needs at least one provider")
        if probe_interval_s <= 0:
            raise ValueError("probe_interval_s must be positive")
        config = breaker or BreakerConfig()
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self._probe_interval_s = probe_interval_s
        self.members = [Member(self.capability, key, p, config, clock)
                        for key, p in zip(member_keys(providers), providers)]
        self._prober: asyncio.Task | None = None

    def states(self) -> dict[str, str]:
        """Breaker state per provider: "closed", "half_open" or "open"."""
        return {m.key: m.breaker.state.value for m in self.members}

    def route(self, supports: Callable[[object], bool], what: str) -> tuple[list[Member], str]:
        """The members that support a request, and the preferred one's key."""
        members = [m for m in self.members if supports(m.provider)]
        if not members:
            raise ProviderError(f"no {self.capability} provider supports {what}", retryable=False)
        return members, members[0].key

    def serve(self, member: Member | None, preferred: str | None, *, done: bool) -> None:
        """Tell the caller's context who served; count a finished call served by a fallback."""
        SERVED_BY.set(Served(self.capability, member.key if member else None, preferred))
        if done and member is not None and member.key != preferred:
            count_fallback(self.capability, member.key)

    async def first_success(self, supports: Callable[[object], bool], what: str,
                            call: Callable[[object], Awaitable]) -> tuple[Member, object]:
        """Try the supporting members in order, each through the retry policy, until one
        answers; tell the caller's context who served. Raises when every one failed."""
        members, preferred = self.route(supports, what)
        tried: list[str] = []
        for m in members:
            if not m.allow():
                tried.append(f"{m.key} (circuit open)")
                continue
            started = time.perf_counter()
            try:
                result = await self.retry.run(lambda: call(m.provider))
            except ParleyError as exc:
                observe_call(self.capability, m.key, exc.code, started)
                self.failed(m, exc, tried)
                continue
            observe_call(self.capability, m.key, "ok", started)
            self.serve(m, preferred, done=True)
            return m, result
        self.serve(None, preferred, done=True)
        raise self.exhausted(what, tried)

    def failed(self, member: Member, exc: BaseException, tried: list[str]) -> None:
        member.failed(exc)
        tried.append(f"{member.key} ({type(exc).__name__})")
        self._ensure_prober()

    def exhausted(self, what: str, tried: list[str]) -> ProviderError:
        # retryable=False: the chain already retried and fell back; nobody above retries.
        detail = ", ".join(tried) or "nothing"
        return ProviderError(f"no {self.capability} provider could serve {what}; tried: {detail}",
                             retryable=False)

    async def probe(self, provider) -> None:
        """A tiny real request to `provider`; each chain says what that is."""
        raise NotImplementedError

    async def probe_now(self) -> None:
        """One round: probe every provider whose breaker admits a probe now."""
        for m in self.members:
            if m.breaker.state is BreakerState.CLOSED or not m.breaker.probe_due(self.clock()):
                continue
            if not m.allow():
                continue
            try:
                await self.retry.run(lambda: self.probe(m.provider), attempts=1)
            except Exception as exc:  # a background loop must outlive a buggy adapter
                if not isinstance(exc, ParleyError):
                    log.error("%s probe of %s raised %s",
                              self.capability, m.key, type(exc).__name__)
                m.failed(exc)
            else:
                m.succeeded()

    async def warm_members(self) -> None:
        """Warm every provider; one that fails starts with a failure, not a crash."""
        for m in self.members:
            try:
                await m.provider.warm_up()
            except ParleyError as exc:
                m.failed(exc)
                self._ensure_prober()

    async def stop_prober(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)
            self._prober = None

    def _ensure_prober(self) -> None:
        if self._prober is None or self._prober.done():
            # An empty context: the probes' usage must not land in the meter of the work
            # item that happened to fail, nor change that item's served_by.
            self._prober = asyncio.get_running_loop().create_task(
                self._probe_loop(), context=contextvars.Context())

    async def _probe_loop(self) -> None:
        while any(m.breaker.state is not BreakerState.CLOSED for m in self.members):
            await asyncio.sleep(self._probe_interval_s)
            await self.probe_now()

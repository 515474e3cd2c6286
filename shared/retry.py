"""The one place Parley retries a provider call.

Whether a failure is worth another attempt is decided once, by the error's own
``retryable`` flag (shared/errors.py): a timeout or a 5xx is; a bad key, an exhausted quota
or a malformed answer is not. Exceptions that are not `ParleyError`s are bugs and are
raised at once. Layers above (fallback chains, workers) never retry again.

Every attempt is cut at ``timeout_s``; running out of time raises `ProviderTimeout`
(retryable). Between attempts: exponential back-off with full jitter, so a vendor that
stumbled is not hit by every worker at the same instant.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from shared.errors import ParleyError, ProviderTimeout

log = logging.getLogger("parley.resilience")

T = TypeVar("T")


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ParleyError) and exc.retryable


async def call_once(fn: Callable[[], Awaitable[T]], timeout_s: float) -> T:
    """One attempt, cut at `timeout_s`. Only our own deadline becomes `ProviderTimeout`;
    a TimeoutError that `fn` raised by itself is a bug and stays one."""
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            return await fn()
    except TimeoutError as exc:
        if deadline.expired():
            raise ProviderTimeout(f"no answer within {timeout_s:g} s") from exc
        raise


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.info("attempt %d failed (%s); retrying", state.attempt_number, type(exc).__name__)


async def call_with_retry(
    fn: Callable[[], Awaitable[T]],
    *,
    attempts: int = 2,
    base_delay_s: float = 0.2,
    max_delay_s: float = 2.0,
    timeout_s: float = 10.0,
) -> T:
    """Await `fn()` (a fresh awaitable per attempt) up to `attempts` times in all."""
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=base_delay_s, max=max_delay_s),
        retry=retry_if_exception(is_retryable),
        before_sleep=_log_retry,
        reraise=True,  # the caller sees our own error, never tenacity's RetryError
    )
    return await retrying(call_once, fn, timeout_s)


@dataclass(frozen=True)
class RetryPolicy:
    """The retry settings of one provider chain; `run` applies them."""

    attempts: int = 2
    base_delay_s: float = 0.2
    max_delay_s: float = 2.0
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.timeout_s <= 0 or self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("timeout_s must be positive and delays not negative")

    async def run(self, fn: Callable[[], Awaitable[T]], *, attempts: int | None = None) -> T:
        return await call_with_retry(
            fn,
            attempts=self.attempts if attempts is None else attempts,
            base_delay_s=self.base_delay_s,
            max_delay_s=self.max_delay_s,
            timeout_s=self.timeout_s,
        )

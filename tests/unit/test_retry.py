"""Retries (shared/retry.py): decided by `retryable`, each attempt cut by a timeout."""

import asyncio

import pytest

from shared.errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderQuotaError,
    ProviderTimeout,
    ProviderUnavailable,
)
from shared.retry import RetryPolicy, call_with_retry

FAST = {"base_delay_s": 0.001, "max_delay_s": 0.002}
HANG = object()


class Scripted:
    """A fake provider call: each call plays the next outcome (a value, an exception, or
    HANG: wait until cancelled)."""

    def __init__(self, *outcomes) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0
        self.cancelled = 0

    async def __call__(self):
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        if outcome is HANG:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


async def test_first_success_is_returned():
    fn = Scripted("hola")
    assert await call_with_retry(fn, **FAST) == "hola"
    assert fn.calls == 1


@pytest.mark.parametrize("error", [ProviderUnavailable("503"), ProviderTimeout("slow"),
                                   ProviderError("flaky", retryable=True)])
async def test_retryable_errors_are_retried(error):
    fn = Scripted(error, "hola")
    assert await call_with_retry(fn, attempts=2, **FAST) == "hola"
    assert fn.calls == 2


@pytest.mark.parametrize("error", [ProviderAuthError("401"), ProviderQuotaError("429"),
                                   ProviderBadResponse("junk"), ProviderError("no")])
async def test_other_parley_errors_are_raised_at_once(error):
    fn = Scripted(error, "hola")
    with pytest.raises(type(error)) as caught:
        await call_with_retry(fn, attempts=3, **FAST)
    assert caught.value is error
    assert fn.calls == 1


@pytest.mark.parametrize("error", [KeyError("bug"), ValueError("bug"), RuntimeError("bug")])
async def test_bugs_are_not_retried(error):
    fn = Scripted(error, "hola")
    with pytest.raises(type(error)):
        await call_with_retry(fn, attempts=3, **FAST)
    assert fn.calls == 1


@pytest.mark.parametrize("attempts", [1, 2, 4])
async def test_attempts_are_the_total_and_the_last_error_is_raised(attempts):
    errors = [ProviderUnavailable(f"down {i}") for i in range(attempts)]
    fn = Scripted(*errors)
    with pytest.raises(ProviderUnavailable) as caught:
        await call_with_retry(fn, attempts=attempts, **FAST)
    assert fn.calls == attempts
    assert caught.value is errors[-1]  # our own error, never tenacity's RetryError


async def test_a_hanging_attempt_is_cut_and_retried():
    fn = Scripted(HANG, "hola")
    assert await call_with_retry(fn, attempts=2, timeout_s=0.01, **FAST) == "hola"
    assert (fn.calls, fn.cancelled) == (2, 1)


async def test_running_out_of_time_raises_provider_timeout():
    fn = Scripted(HANG)
    with pytest.raises(ProviderTimeout) as caught:
        await call_with_retry(fn, attempts=2, timeout_s=0.005, **FAST)
    assert fn.calls == 2
    assert caught.value.retryable
    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_a_timeout_error_of_the_callee_is_a_bug_not_our_deadline():
    fn = Scripted(TimeoutError("the callee's own"), "hola")
    with pytest.raises(TimeoutError) as caught:
        await call_with_retry(fn, attempts=3, timeout_s=5, **FAST)
    assert not isinstance(caught.value, ProviderTimeout)
    assert fn.calls == 1


async def test_attempts_must_be_positive():
    with pytest.raises(ValueError):
        await call_with_retry(Scripted("x"), attempts=0)


async def test_policy_runs_with_its_settings_and_an_override():
    policy = RetryPolicy(attempts=3, base_delay_s=0.001, max_delay_s=0.001, timeout_s=1)
    fn = Scripted(ProviderUnavailable("a"), ProviderUnavailable("b"), "hola")
    assert await policy.run(fn) == "hola"
    assert fn.calls == 3
    once = Scripted(ProviderUnavailable("a"), "hola")
    with pytest.raises(ProviderUnavailable):
        await policy.run(once, attempts=1)
    assert once.calls == 1


@pytest.mark.parametrize("kwargs", [{"attempts": 0}, {"timeout_s": 0}, {"base_delay_s": -1}])
def test_policy_is_validated(kwargs):
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)

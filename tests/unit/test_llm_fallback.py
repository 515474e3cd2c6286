"""FallbackLlm, driven by fake LLM providers with knobs: no mocks."""

from __future__ import annotations

import asyncio
import logging

import pytest

from services.tools.llm.fallback import FallbackLlm
from services.tools.llm.provider import (
    TextDelta,
    ToolCallRequest,
    TurnEnd,
    user_message,
)
from shared.errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderQuotaError,
    ProviderTimeout,
    ProviderUnavailable,
)
from shared.fallback import FallbackNotices, Served, served_by
from shared.retry import RetryPolicy
from shared.usage import Usage, metering, record

RETRY = RetryPolicy(attempts=2, base_delay_s=0.001, max_delay_s=0.001, timeout_s=0.05)
SECRET = "sk-live-DO-NOT-LEAK"
HELLO = [user_message("hello")]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeLlm:
    """Knobs: `fail_with` raised after `fail_after` events (0: before any), `hang_after`
    (events before a stall), `end_turn` (False: the stream stops without a TurnEnd),
    `calls` (tool calls to make instead of text)."""

    def __init__(self, name: str, words: int = 3) -> None:
        self.name, self.words = name, words
        self.fail_with: BaseException | None = None
        self.fail_after = 0
        self.hang_after: int | None = None
        self.end_turn = True
        self.calls: list[ToolCallRequest] = []
        self.requests: list[tuple] = []
        self.streams_closed = 0
        self.closed = False

    def script(self) -> list:
        body = self.calls or [TextDelta(f"{self.name}-{i} ") for i in range(self.words)]
        return body + ([TurnEnd("tool_calls" if self.calls else "stop")] if self.end_turn else [])

    async def stream(self, messages, tools, *, instructions=None):
        self.requests.append((messages, tools, instructions))
        try:
            for i, event in enumerate(self.script()):
                if self.fail_with is not None and i == self.fail_after:
                    raise self.fail_with
                if self.hang_after == i:
                    await asyncio.Event().wait()
                if isinstance(event, TurnEnd):
                    record(Usage(self.name, "fake", "llm", input_tokens=1))
                yield event
        finally:
            self.streams_closed += 1

    async def close(self) -> None:
        self.closed = True


def chain_of(providers, clock=None):
    return FallbackLlm(providers, clock=clock or Clock(), retry=RETRY, probe_interval_s=0.001)


async def turn(chain, tools=()):
    return [e async for e in chain.stream(HELLO, list(tools), instructions="Be brief.")]


def words(events) -> list[str]:
    return [e.text for e in events if isinstance(e, TextDelta)]


async def test_the_preferred_provider_serves_the_whole_turn():
    a, b = FakeLlm("la"), FakeLlm("lb")
    chain = chain_of([a, b])
    events = await turn(chain, tools=[{"name": "t"}])
    assert words(events) == ["la-0 ", "la-1 ", "la-2 "] and events[-1] == TurnEnd("stop")
    assert served_by() == Served("llm", "la", "la")
    assert a.requests == [(HELLO, [{"name": "t"}], "Be brief.")] and b.requests == []
    assert a.streams_closed == 1
    await chain.close()
    assert a.closed and b.closed


async def test_tool_calls_pass_through():
    a = FakeLlm("lt")
    a.calls = [ToolCallRequest("c1", "get_time", "{}")]
    chain = chain_of([a])
    assert await turn(chain) == [ToolCallRequest("c1", "get_time", "{}"), TurnEnd("tool_calls")]


@pytest.mark.parametrize("error, attempts", [
    (ProviderUnavailable("503"), RETRY.attempts),  # retried, then the next one
    (ProviderTimeout("slow"), RETRY.attempts),
    (ProviderAuthError("401"), 1),  # never retried: the breaker opens at once
    (ProviderQuotaError("429"), 1),
    (ProviderBadResponse("garbage"), 1),
])  # fmt: skip
async def test_a_failure_before_the_first_event_falls_back(error, attempts):
    a, b = FakeLlm("lf-a"), FakeLlm("lf-b")
    a.fail_with = error
    chain = chain_of([a, b])
    events = await turn(chain)
    assert words(events) == ["lf-b-0 ", "lf-b-1 ", "lf-b-2 "]
    assert len(a.requests) == attempts and a.streams_closed == attempts
    assert served_by() == Served("llm", "lf-b", "lf-a") and served_by().fallback
    await chain.close()


async def test_served_by_is_known_when_the_first_event_arrives():
    a, b = FakeLlm("ls-a"), FakeLlm("ls-b")
    a.fail_with = ProviderUnavailable("503")
    chain = chain_of([a, b])
    stream = chain.stream(HELLO, [], instructions=None)
    assert await anext(stream) == TextDelta("ls-b-0 ")
    assert served_by() == Served("llm", "ls-b", "ls-a")
    await stream.aclose()
    assert b.streams_closed == 1  # a consumer that stops early closes the provider's stream
    await chain.close()


async def test_a_stall_before_the_first_event_falls_back():
    a, b = FakeLlm("lh-a"), FakeLlm("lh-b")
    a.hang_after = 0
    chain = chain_of([a, b])
    assert words(await turn(chain)) == ["lh-b-0 ", "lh-b-1 ", "lh-b-2 "]
    assert a.streams_closed == RETRY.attempts  # every abandoned attempt was closed
    await chain.close()


async def test_no_switch_once_output_started():
    a, b = FakeLlm("lm-a"), FakeLlm("lm-b")
    a.fail_with, a.fail_after = ProviderUnavailable("reset"), 2
    chain = chain_of([a, b])
    got = []
    with pytest.raises(ProviderUnavailable):
        async for event in chain.stream(HELLO, [], instructions=None):
            got.append(event)
    assert words(got) == ["lm-a-0 ", "lm-a-1 "] and b.requests == []
    assert len(a.requests) == 1  # not retried either: the words already went out
    assert a.streams_closed == 1
    await chain.close()


async def test_no_switch_after_a_tool_call_went_out():
    a, b = FakeLlm("lc-a"), FakeLlm("lc-b")
    a.calls = [ToolCallRequest("c1", "f", "{}"), ToolCallRequest("c2", "g", "{}")]
    a.fail_with, a.fail_after = ProviderUnavailable("reset"), 1
    chain = chain_of([a, b])
    got = []
    with pytest.raises(ProviderUnavailable):
        async for event in chain.stream(HELLO, [], instructions=None):
            got.append(event)
    assert got == [ToolCallRequest("c1", "f", "{}")] and b.requests == []
    await chain.close()


async def test_a_stall_in_the_middle_is_a_timeout_not_a_switch():
    a, b = FakeLlm("lsm-a"), FakeLlm("lsm-b")
    a.hang_after = 1
    chain = chain_of([a, b])
    got = []
    with pytest.raises(ProviderTimeout):
        async for event in chain.stream(HELLO, [], instructions=None):
            got.append(event)
    assert words(got) == ["lsm-a-0 "] and b.requests == []
    await chain.close()


async def test_failures_after_output_count_against_the_breaker():
    a, b = FakeLlm("lbr-a"), FakeLlm("lbr-b")
    a.fail_with, a.fail_after = ProviderUnavailable("reset"), 1
    chain = chain_of([a, b])
    for _ in range(3):
        with pytest.raises(ProviderUnavailable):
            await turn(chain)
    assert chain.states()["lbr-a"] == "open"
    assert words(await turn(chain))[0] == "lbr-b-0 "  # the next turn starts elsewhere
    await chain.close()


async def test_a_stream_without_a_turn_end_is_a_bad_response():
    a = FakeLlm("lne")
    a.end_turn = False
    chain = chain_of([a])
    with pytest.raises(ProviderBadResponse):
        await turn(chain)
    a.words = 0  # no event at all: a bad response before output, so no output
    with pytest.raises(ProviderError, match=r"lne \(ProviderBadResponse\)"):
        await turn(chain)
    await chain.close()


async def test_when_all_fail_the_error_names_what_was_tried_and_nothing_else(caplog):
    a, b = FakeLlm("lx-a"), FakeLlm("lx-b")
    a.fail_with = ProviderUnavailable(f"key {SECRET} refused")
    b.fail_with = ProviderAuthError(f"bad key {SECRET}")
    chain = chain_of([a, b])
    with caplog.at_level(logging.INFO, logger="parley.resilience"), \
            pytest.raises(ProviderError) as caught:
        await turn(chain)
    message = str(caught.value)
    assert "lx-a (ProviderUnavailable)" in message and "lx-b (ProviderAuthError)" in message
    assert not caught.value.retryable  # the chain already retried: nobody above does
    assert served_by() == Served("llm", None, "lx-a")
    assert SECRET not in message and SECRET not in caplog.text
    with pytest.raises(ProviderError, match=r"lx-b \(circuit open\)"):
        await turn(chain)
    await chain.close()


async def test_usage_lands_in_the_callers_meter():
    a, b = FakeLlm("lu-a"), FakeLlm("lu-b")
    a.fail_with = ProviderAuthError("401")
    chain = chain_of([a, b])
    with metering() as meter:
        await turn(chain)
    assert [u.provider for u in meter.records] == ["lu-b"]
    await chain.close()


async def test_a_failed_provider_is_probed_and_taken_back():
    clock = Clock()
    a, b = FakeLlm("lp-a"), FakeLlm("lp-b")
    a.fail_with = ProviderAuthError("401")
    chain = chain_of([a, b], clock=clock)
    notices = FallbackNotices()
    await turn(chain)
    assert notices.observe("session", served_by()) == "fallback"
    a.fail_with = None  # the key was fixed
    clock.now += 30
    await chain.probe_now()
    assert chain.states()["lp-a"] == "closed"
    probe_messages, probe_tools, _ = a.requests[-1]
    assert probe_tools == [] and probe_messages[0]["role"] == "user"
    assert words(await turn(chain))[0] == "lp-a-0 "
    assert notices.observe("session", served_by()) == "recovered"
    await chain.close()


async def test_bugs_propagate_and_touch_no_breaker():
    a, b = FakeLlm("lbug-a"), FakeLlm("lbug-b")
    a.fail_with = KeyError("adapter bug")
    chain = chain_of([a, b])
    with pytest.raises(KeyError):
        await turn(chain)
    assert b.requests == [] and chain.states()["lbug-a"] == "closed"


def test_a_chain_needs_providers():
    with pytest.raises(ValueError):
        FallbackLlm([])

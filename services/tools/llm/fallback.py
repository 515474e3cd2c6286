"""A fallback chain of LLMs that is itself an `LlmProvider`.

Built on shared/fallback_core.py's `Chain` (one breaker per provider, the background
prober, `served_by()`), with the rule FallbackSynthesizer follows for audio: a turn may
move to the next provider only until its first event. Once a word or a tool call went
out, that provider keeps the turn; a failure after that is raised, never papered over by
another model starting the answer again.

Every turn a chain yields ends with one `TurnEnd`; `served_by()` is set (capability
"llm") by the time the first event arrives, in the consumer's own context.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import NoReturn

from services.tools.llm.provider import LlmEvent, LlmProvider, TurnEnd, user_message
from shared.errors import ParleyError, ProviderBadResponse
from shared.fallback_core import Chain, Member
from shared.retry import call_once

_WHAT = "a chat turn"
PROBE_MESSAGES = [user_message("Hi")]
PROBE_INSTRUCTIONS = "Reply with one word."


async def _first_event(stream: AsyncIterator[LlmEvent]) -> tuple[AsyncIterator[LlmEvent],
                                                                 LlmEvent]:
    """The stream and its first event; the stream is closed when there is none."""
    try:
        event = await anext(stream, None)
        if event is None:
            raise ProviderBadResponse("the model's stream ended without a single event")
    except BaseException:
        await stream.aclose()
        raise
    return stream, event


async def _open_turn(provider: LlmProvider, messages: list[dict], tools: list[dict],
                     instructions: str | None) -> tuple[AsyncIterator[LlmEvent], LlmEvent]:
    """One attempt: a fresh stream from `provider`, up to its first event."""
    return await _first_event(provider.stream(messages, tools, instructions=instructions))


class FallbackLlm(Chain):
    """`FallbackLlm(providers, clock=…, probe_interval_s=…, breaker=…, retry=…)`."""

    capability = "llm"
    name = "fallback"

    async def stream(self, messages: list[dict], tools: list[dict], *,
                     instructions: str | None = None) -> AsyncIterator[LlmEvent]:
        m, opened = await self.first_success(
            lambda provider: True, _WHAT,
            lambda provider: _open_turn(provider, messages, tools, instructions))
        async with aclosing(self._committed(m, *opened)) as events:
            async for event in events:
                yield event

    async def _committed(self, m: Member, stream: AsyncIterator[LlmEvent],
                         first: LlmEvent) -> AsyncIterator[LlmEvent]:
        """The turn from the provider that produced its first event, to its end."""
        try:
            event = first
            while not isinstance(event, TurnEnd):
                yield event
                event = await self._next(m, stream)
            m.succeeded()
            yield event
            await self._finish(stream)
        finally:
            await stream.aclose()

    async def _next(self, m: Member, stream: AsyncIterator[LlmEvent]) -> LlmEvent:
        try:
            event = await call_once(lambda: anext(stream, None), self.retry.timeout_s)
        except ParleyError as exc:
            self._fail(m, exc)
        if event is None:
            self._fail(m, ProviderBadResponse("the model's stream ended without a TurnEnd"))
        return event

    def _fail(self, m: Member, exc: ParleyError) -> NoReturn:
        self.failed(m, exc, [])
        raise exc  # output already went out: no switch in the middle of a turn

    async def _finish(self, stream: AsyncIterator[LlmEvent]) -> None:
        """Let the provider end its stream by itself after TurnEnd (an HTTP adapter reads
        the body's end then, so its connection goes back to the pool)."""
        try:
            await call_once(lambda: anext(stream, None), self.retry.timeout_s)
        except ParleyError:
            pass  # the turn is complete: what happens after it is not the caller's concern

    async def probe(self, provider: LlmProvider) -> None:
        stream = provider.stream(PROBE_MESSAGES, [], instructions=PROBE_INSTRUCTIONS)
        await _first_event(stream)  # one event is proof enough; the rest is not awaited
        await stream.aclose()

    async def close(self) -> None:
        await self.stop_prober()
        for m in self.members:
            await m.provider.close()

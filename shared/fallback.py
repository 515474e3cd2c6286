"""Fallback chains that are themselves providers: FallbackTranslator, FallbackSynthesizer,
FallbackSttEngine.

Each chain holds its providers in order of preference, each behind its own circuit breaker
(shared/breaker.py). A call goes to the first provider that supports the request and whose
breaker allows it, through `call_with_retry` (the only retries); a `ParleyError` records a
failure and moves on; an auth or quota error opens that breaker at once. A provider whose
breaker is open is probed in the background with a tiny request and taken back when the
probe succeeds. When every provider failed, the chain raises `ProviderError` naming what
it tried (provider names and error types only: never a key, never the text).
Non-Parley exceptions are bugs: they propagate and touch no breaker.

Streams never switch provider once output started: TTS falls back only before the first
chunk; STT falls back only before the utterance's first partial, and then replays the
utterance's audio into the next engine.

Who served — for the worker's `warning` to the client::

    result = await chain.translate(text, source, target)
    served = served_by()  # Served(capability="translate", provider="local", preferred="openai")
    notice = notices.observe(listener_sid, served)  # "fallback", "recovered" or None

`served_by()` reads a context variable that the chain sets in the caller's own context, so
read it in the same asyncio task, after the call (for TTS: after the first chunk arrived;
for STT: after `feed`/`finish`). Async generators run in their consumer's context, so it
works for `async for chunk in chain.synthesize(...)`. It does NOT come back through
`asyncio.create_task`, `gather` or `wait_for` (they run the call in a copy of the context):
use `asyncio.timeout` around the call instead. `FallbackNotices` turns a stream of `Served`
values per listener into the two warnings worth sending: "a fallback serves you" (once per
switch) and "the preferred provider is back".

The machinery (Served, breakers per provider, the prober) is in shared/fallback_core.py;
import everything from here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.audio import resample
from shared.errors import ParleyError
from shared.fallback_core import (
    SERVED_BY,
    Chain,
    FallbackNotices,
    Member,
    Served,
    probe_language,
    served_by,
    speaks,
)
from shared.languages import ANY, supports_pair
from shared.retry import call_once

if TYPE_CHECKING:  # shared/ never imports services/ at run time: they import it
    from services.stt.provider import SttEngine, SttSession
    from services.translate.provider import Translator
    from services.tts.provider import Synthesizer

__all__ = ["SERVED_BY", "FallbackNotices", "FallbackSttEngine", "FallbackSynthesizer",
           "FallbackTranslator", "Served", "served_by"]

log = logging.getLogger("parley.resilience")

PROBE_TEXT = "Hello."


class FallbackTranslator(Chain):
    capability = "translate"
    name = "fallback"

    def pairs(self) -> frozenset[tuple[str, str]]:
        return frozenset().union(*(m.provider.pairs() for m in self.members))

    async def translate(self, text: str, source: str, target: str) -> str:
        m, result = await self.first_success(
            lambda p: supports_pair(p.pairs(), source, target), f"{source}→{target}",
            lambda p: p.translate(text, source, target))
        m.succeeded()
        return result

    async def probe(self, provider: Translator) -> None:
        pairs = provider.pairs()
        source = "en" if supports_pair(pairs, "en", ANY) else sorted(pairs)[0][0]
        targets = sorted(t for s, t in pairs if s in (source, ANY) and t not in (source, ANY))
        await provider.translate(PROBE_TEXT, source, targets[0] if targets else "es")

    async def warm_up(self) -> None:
        await self.warm_members()

    async def close(self) -> None:
        await self.stop_prober()
        for m in self.members:
            await m.provider.close()


async def _aclose(stream) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def _first_chunk(stream: AsyncIterator[bytes]) -> tuple[AsyncIterator[bytes] | None, bytes]:
    try:
        return stream, await anext(stream)
    except StopAsyncIteration:
        return None, b""  # no audio at all (a blank text): a success
    except BaseException:
        await _aclose(stream)
        raise


class FallbackSynthesizer(Chain):
    capability = "tts"
    name = "fallback"

    def __init__(self, providers: Sequence[Synthesizer], **kw) -> None:
        super().__init__(providers, **kw)
        self.languages = frozenset().union(*(p.languages for p in providers))

    async def synthesize(self, text: str, language: str, voice: str | None,
                         sample_rate: int) -> AsyncIterator[bytes]:
        m, (stream, first) = await self.first_success(
            lambda p: speaks(p.languages, language), language,
            lambda p: _first_chunk(p.synthesize(text, language, voice, sample_rate)))
        rest = self._rest(m, stream, first)
        try:
            async for chunk in rest:
                yield chunk
        finally:  # a consumer that stops early closes the vendor's stream now
            await rest.aclose()

    async def _rest(self, m: Member, stream, first: bytes) -> AsyncIterator[bytes]:
        """The audio after the first chunk: from the same provider, whatever happens."""
        if stream is None:
            m.succeeded()
            return
        try:
            chunk: bytes | None = first
            while chunk is not None:
                yield chunk
                chunk = await self._next_chunk(m, stream)
            m.succeeded()
        finally:
            await _aclose(stream)

    async def _next_chunk(self, m: Member, stream) -> bytes | None:
        try:
            return await call_once(lambda: anext(stream), self.retry.timeout_s)
        except StopAsyncIteration:
            return None
        except ParleyError as exc:
            self.failed(m, exc, [])
            raise  # output already went out: no switch in the middle of an utterance

    async def probe(self, provider: Synthesizer) -> None:
        stream = provider.synthesize(PROBE_TEXT, probe_language(provider.languages), None, 16000)
        try:
            await anext(stream, b"")
        finally:
            await _aclose(stream)

    async def close(self) -> None:
        await self.stop_prober()
        for m in self.members:
            await m.provider.close()


@dataclass
class _Utterance:
    members: list[Member]  # the engines that speak the session's language, in order
    preferred: str
    index: int  # which of `members` serves this utterance
    audio: list[bytes] = field(default_factory=list)  # as fed, for a replay
    produced: bool = False  # a partial came out: this engine keeps the utterance
    replay: bool = False  # the serving engine has not heard `audio` yet
    tried: list[str] = field(default_factory=list)

    @property
    def member(self) -> Member:
        return self.members[self.index]


class FallbackSttEngine(Chain):
    capability = "stt"
    name = "fallback"

    def __init__(self, engines: Sequence[SttEngine], **kw) -> None:
        super().__init__(engines, **kw)
        self.sample_rate = engines[0].sample_rate  # the others' audio is resampled to theirs
        self.languages = frozenset().union(*(e.languages for e in engines))

    def open(self, language: str) -> SttSession:
        return _FallbackSttSession(self, language)

    async def warm_up(self) -> None:
        await self.warm_members()

    async def close(self) -> None:
        """Stops the prober (the SttEngine Protocol has no close; engines hold nothing)."""
        await self.stop_prober()

    async def probe(self, engine: SttEngine) -> None:
        session = engine.open(probe_language(engine.languages))
        try:
            await session.feed(bytes(2 * engine.sample_rate // 5))  # 200 ms of silence
            await session.finish()
        finally:
            await session.close()


class _FallbackSttSession:
    """One speaker's recognition; the engine is chosen per utterance, at its first feed."""

    def __init__(self, chain: FallbackSttEngine, language: str) -> None:
        self._chain, self._language = chain, language
        self._sessions: dict[str, SttSession] = {}  # opened lazily: cloud sessions bill
        self._utterance: _Utterance | None = None

    async def feed(self, pcm: bytes) -> str | None:
        u = self._utterance or self._begin()
        u.audio.append(pcm)
        while True:
            try:
                partial = await self._catch_up(u, u.audio if u.replay else [pcm])
            except ParleyError as exc:
                await self._switch(u, exc)
                continue
            u.produced = u.produced or bool(partial)
            self._chain.serve(u.member, u.preferred, done=False)
            return partial

    async def finish(self) -> str:
        u, self._utterance = self._utterance, None
        if u is None:
            return ""  # nothing was fed: nothing was said
        while True:
            try:
                if u.replay:
                    await self._catch_up(u, u.audio)
                text = await call_once(self._session(u.member).finish, self._chain.retry.timeout_s)
            except ParleyError as exc:
                await self._switch(u, exc)
                continue
            u.member.succeeded()
            self._chain.serve(u.member, u.preferred, done=True)
            return text

    async def close(self) -> None:
        for key in list(self._sessions):
            await self._drop(key)

    def _begin(self) -> _Utterance:
        chain = self._chain
        members, preferred = chain.route(lambda e: speaks(e.languages, self._language),
                                          self._language)
        u = _Utterance(members, preferred, index=-1)
        self._utterance = u
        self._next_engine(u)
        return u

    def _next_engine(self, u: _Utterance) -> None:
        """Move to the next engine whose breaker allows it, or give the utterance up."""
        for index in range(u.index + 1, len(u.members)):
            if u.members[index].allow():
                u.index, u.replay = index, True
                return
            u.tried.append(f"{u.members[index].key} (circuit open)")
        self._utterance = None
        self._chain.serve(None, u.preferred, done=True)
        raise self._chain.exhausted(self._language, u.tried)

    async def _switch(self, u: _Utterance, exc: ParleyError) -> None:
        self._chain.failed(u.member, exc, u.tried)
        await self._drop(u.member.key)
        if u.produced:
            self._utterance = None  # the next feed starts afresh
            raise exc  # this engine's words already went out: no switch mid-utterance
        self._next_engine(u)

    async def _catch_up(self, u: _Utterance, chunks: list[bytes]) -> str | None:
        session, partial = self._session(u.member), None
        for chunk in chunks:
            pcm = self._pcm_for(u.member, chunk)
            partial = await call_once(lambda: session.feed(pcm), self._chain.retry.timeout_s)
        u.replay = False
        return partial

    def _session(self, m: Member) -> SttSession:
        if m.key not in self._sessions:
            self._sessions[m.key] = m.provider.open(self._language)
        return self._sessions[m.key]

    def _pcm_for(self, m: Member, pcm: bytes) -> bytes:
        ours, theirs = self._chain.sample_rate, m.provider.sample_rate
        return pcm if theirs == ours else resample(pcm, ours, theirs)

    async def _drop(self, key: str) -> None:
        """Close and forget one engine's session (after a failure, the next utterance opens
        a fresh one). A session that fails to close is past caring about."""
        session = self._sessions.pop(key, None)
        if session is not None:
            try:
                await call_once(session.close, self._chain.retry.timeout_s)
            except ParleyError as exc:
                log.info("stt session of %s did not close cleanly: %s", key, type(exc).__name__)

"""Fallback chains (shared/fallback.py), driven by fake providers with knobs: no mocks."""

import asyncio
import logging

import pytest
from prometheus_client import REGISTRY

from shared.breaker import BreakerConfig
from shared.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderQuotaError,
    ProviderTimeout,
    ProviderUnavailable,
)
from shared.fallback import (
    FallbackNotices,
    FallbackSttEngine,
    FallbackSynthesizer,
    FallbackTranslator,
    Served,
    served_by,
)
from shared.retry import RetryPolicy
from shared.usage import Usage, metering, record

RETRY = RetryPolicy(attempts=2, base_delay_s=0.001, max_delay_s=0.001, timeout_s=0.05)
SECRET = "sk-live-DO-NOT-LEAK"
PRIVATE = "my private words"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def hang() -> None:
    await asyncio.Event().wait()


class FakeTranslator:
    """Knobs: `fail_with` (raised by every call while set), `hang`."""

    def __init__(self, name, pairs=frozenset({("en", "es")}), model=None):
        self.name, self._pairs, self.model = name, pairs, model
        self.fail_with: BaseException | None = None
        self.hang = False
        self.calls: list[str] = []
        self.warmed = self.closed = False

    def pairs(self):
        return self._pairs

    async def translate(self, text, source, target):
        self.calls.append(text)
        if self.hang:
            await hang()
        if self.fail_with is not None:
            raise self.fail_with
        record(Usage(self.name, "fake", "translate", input_tokens=len(text)))
        return f"{self.name}:{text}"

    async def warm_up(self):
        if self.fail_with is not None:
            raise self.fail_with
        self.warmed = True

    async def close(self):
        self.closed = True


class FakeSynth:
    """Knobs: `fail_with` raised after `fail_after` chunks (0: before any), `hang_after`."""

    def __init__(self, name, languages=frozenset({"en", "es"}), chunks=3):
        self.name, self.languages, self.chunks = name, languages, chunks
        self.fail_with: BaseException | None = None
        self.fail_after = 0
        self.hang_after: int | None = None
        self.calls = 0
        self.streams_closed = 0

    async def synthesize(self, text, language, voice, sample_rate):
        self.calls += 1
        try:
            for i in range(self.chunks if text.strip() else 0):
                if self.fail_with is not None and i == self.fail_after:
                    raise self.fail_with
                if self.hang_after == i:
                    await hang()
                yield f"{self.name}-{i}".encode()
        finally:
            self.streams_closed += 1

    async def close(self):
        pass


class FakeSttEngine:
    """Knobs: `fail_with` raised by a feed after `fail_after_feeds` good feeds of a session,
    or by `finish` when `fail_finish`; `partials`: feed returns a partial."""

    def __init__(self, name, languages=frozenset({"en"}), sample_rate=16000, partials=False):
        self.name, self.languages, self.sample_rate = name, languages, sample_rate
        self.partials = partials
        self.fail_with: BaseException | None = None
        self.fail_after_feeds = 0
        self.fail_finish = False
        self.sessions: list[FakeSttSession] = []

    def open(self, language):
        session = FakeSttSession(self)
        self.sessions.append(session)
        return session

    async def warm_up(self):
        pass


class FakeSttSession:
    def __init__(self, engine):
        self.engine, self.fed, self.closed = engine, [], False

    async def feed(self, pcm):
        e = self.engine
        if e.fail_with is not None and not e.fail_finish and len(self.fed) >= e.fail_after_feeds:
            raise e.fail_with
        self.fed.append(pcm)
        return f"{e.name} partial {len(self.fed)}" if e.partials else None

    async def finish(self):
        if self.engine.fail_with is not None and self.engine.fail_finish:
            raise self.engine.fail_with
        heard, self.fed = sum(len(p) for p in self.fed), []
        return f"{self.engine.name} heard {heard} bytes"

    async def close(self):
        self.closed = True


def chain_of(cls, providers, clock=None, **kw):
    return cls(providers, clock=clock or Clock(), retry=RETRY, probe_interval_s=0.001, **kw)


def metric(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- translation ------------------------------------------------------------------------

async def test_a_healthy_preferred_provider_serves():
    a, b = FakeTranslator("ta"), FakeTranslator("tb")
    chain = chain_of(FallbackTranslator, [a, b])
    assert await chain.translate("hello", "en", "es") == "ta:hello"
    assert served_by() == Served("translate", "ta", "ta")
    assert not served_by().fallback
    assert (len(a.calls), len(b.calls)) == (1, 0)


async def test_retryable_failures_are_retried_then_the_next_provider_serves():
    a, b = FakeTranslator("tr-a"), FakeTranslator("tr-b")
    a.fail_with = ProviderUnavailable("503")
    chain = chain_of(FallbackTranslator, [a, b])
    before = metric("parley_fallback_total", capability="translate", provider="tr-b")
    assert await chain.translate("hello", "en", "es") == "tr-b:hello"
    assert len(a.calls) == RETRY.attempts  # the retries happened once, in call_with_retry
    assert served_by() == Served("translate", "tr-b", "tr-a") and served_by().fallback
    assert metric("parley_fallback_total", capability="translate", provider="tr-b") == before + 1
    await chain.close()


async def test_a_hanging_provider_times_out_and_the_next_serves():
    a, b = FakeTranslator("th-a"), FakeTranslator("th-b")
    a.hang = True
    chain = chain_of(FallbackTranslator, [a, b])
    assert await chain.translate("hello", "en", "es") == "th-b:hello"
    await chain.close()


@pytest.mark.parametrize("error", [ProviderAuthError("401"), ProviderQuotaError("429")])
async def test_auth_and_quota_errors_open_the_breaker_at_once(error):
    a, b = FakeTranslator("tq-a"), FakeTranslator("tq-b")
    a.fail_with = error
    chain = chain_of(FallbackTranslator, [a, b])
    assert await chain.translate("one", "en", "es") == "tq-b:one"
    assert len(a.calls) == 1  # not retried
    assert chain.states() == {"tq-a": "open", "tq-b": "closed"}
    assert metric("parley_breaker_state", provider="tq-a", capability="translate") == 2
    assert await chain.translate("two", "en", "es") == "tq-b:two"
    assert len(a.calls) == 1  # skipped while open
    await chain.close()


async def test_three_failures_open_the_breaker():
    a, b = FakeTranslator("t3-a"), FakeTranslator("t3-b")
    a.fail_with = ProviderError("bad gateway")  # not retryable: one call per request
    chain = chain_of(FallbackTranslator, [a, b])
    for n in range(3):
        assert chain.states()["t3-a"] == "closed"
        await chain.translate(f"n{n}", "en", "es")
    assert chain.states()["t3-a"] == "open"
    await chain.close()


async def test_when_all_fail_the_error_names_what_was_tried_and_nothing_else(caplog):
    a, b = FakeTranslator("ta-a"), FakeTranslator("ta-b")
    a.fail_with = ProviderUnavailable(f"key {SECRET} refused")
    b.fail_with = ProviderAuthError(f"bad key {SECRET}")
    chain = chain_of(FallbackTranslator, [a, b])
    with caplog.at_level(logging.INFO, logger="parley.resilience"):
        with pytest.raises(ProviderError) as caught:
            await chain.translate(PRIVATE, "en", "es")
    message = str(caught.value)
    assert "ta-a (ProviderUnavailable)" in message and "ta-b (ProviderAuthError)" in message
    assert not caught.value.retryable  # the chain already retried: nobody above does
    assert served_by() == Served("translate", None, "ta-a")
    for text in (message, caplog.text):
        assert SECRET not in text and PRIVATE not in text
    assert "breaker closed → open" in caplog.text
    with pytest.raises(ProviderError, match=r"ta-b \(circuit open\)"):
        await chain.translate("again", "en", "es")
    await chain.close()


async def test_pairs_route_requests_and_are_the_union():
    a = FakeTranslator("tp-a", frozenset({("en", "es")}))
    b = FakeTranslator("tp-b", frozenset({("en", "de")}))
    chain = chain_of(FallbackTranslator, [a, b])
    assert chain.pairs() == {("en", "es"), ("en", "de")}
    assert await chain.translate("hi", "en", "de") == "tp-b:hi"
    assert not served_by().fallback  # tp-b is the first that translates en→de
    with pytest.raises(ProviderError, match="supports en→fr"):
        await chain.translate("hi", "en", "fr")
    assert chain.states() == {"tp-a": "closed", "tp-b": "closed"}


async def test_bugs_propagate_and_touch_no_breaker():
    a, b = FakeTranslator("tb-a"), FakeTranslator("tb-b")
    a.fail_with = KeyError("adapter bug")
    chain = chain_of(FallbackTranslator, [a, b])
    with pytest.raises(KeyError):
        await chain.translate("hi", "en", "es")
    assert b.calls == [] and chain.states()["tb-a"] == "closed"


async def test_a_failed_provider_is_probed_and_taken_back():
    clock = Clock()
    a, b = FakeTranslator("tpr-a"), FakeTranslator("tpr-b")
    a.fail_with = ProviderAuthError("401")
    chain = chain_of(FallbackTranslator, [a, b], clock=clock)
    notices = FallbackNotices()
    await chain.translate("one", "en", "es")
    assert notices.observe("listener", served_by()) == "fallback"
    await chain.translate("two", "en", "es")
    assert notices.observe("listener", served_by()) is None  # told once
    a.fail_with = None  # the key was fixed
    clock.now += 29
    await chain.probe_now()
    assert a.calls == ["one"]  # not due yet
    clock.now += 1
    await chain.probe_now()
    assert a.calls == ["one", "Hello."] and chain.states()["tpr-a"] == "closed"
    assert await chain.translate("three", "en", "es") == "tpr-a:three"
    assert notices.observe("listener", served_by()) == "recovered"
    await chain.close()


async def test_a_failed_probe_doubles_the_wait():
    clock = Clock()
    a, b = FakeTranslator("tpf-a"), FakeTranslator("tpf-b")
    a.fail_with = ProviderAuthError("401")
    chain = chain_of(FallbackTranslator, [a, b], clock=clock)
    await chain.translate("one", "en", "es")
    clock.now += 30
    await chain.probe_now()
    assert chain.states()["tpf-a"] == "open" and len(a.calls) == 2
    clock.now += 59
    await chain.probe_now()
    assert len(a.calls) == 2
    clock.now += 1
    await chain.probe_now()
    assert len(a.calls) == 3
    await chain.close()


async def until(condition, tries=500):
    for _ in range(tries):  # a few ms at most in practice
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never held")


async def test_the_background_prober_runs_outside_the_callers_meter():
    clock = Clock()
    a, b = FakeTranslator("tbg-a"), FakeTranslator("tbg-b")
    a.fail_with = ProviderAuthError("401")
    chain = chain_of(FallbackTranslator, [a, b], clock=clock)
    with metering() as meter:
        await chain.translate("one", "en", "es")
        a.fail_with = None
        clock.now += 30
        await until(lambda: chain.states()["tbg-a"] == "closed")
        assert served_by().provider == "tbg-b"  # the probe did not touch this context
    assert [u.provider for u in meter.records] == ["tbg-b"]  # the probe's usage is not billed here
    await chain.close()
    assert a.closed and b.closed


async def test_served_by_is_per_task():
    a, b = FakeTranslator("tt-a", frozenset({("en", "es")})), FakeTranslator("tt-b")
    b._pairs = frozenset({("en", "es"), ("en", "de")})
    chain = chain_of(FallbackTranslator, [a, b])

    async def one(target):
        await chain.translate("hi", "en", target)
        await asyncio.sleep(0)
        return served_by().provider

    assert await asyncio.gather(one("es"), one("de")) == ["tt-a", "tt-b"]


async def test_warm_up_failure_is_recorded_not_raised():
    a, b = FakeTranslator("tw-a"), FakeTranslator("tw-b")
    a.fail_with = ProviderAuthError("401")
    chain = chain_of(FallbackTranslator, [a, b])
    await chain.warm_up()
    assert b.warmed and chain.states() == {"tw-a": "open", "tw-b": "closed"}
    await chain.close()


def test_duplicate_names_are_told_apart_by_model():
    chain = FallbackTranslator([FakeTranslator("openai", model="gpt-4.1-nano"),
                                FakeTranslator("openai", model="gpt-4.1-mini"),
                                FakeTranslator("local")])
    assert list(chain.states()) == ["openai:gpt-4.1-nano", "openai:gpt-4.1-mini", "local"]


def test_a_chain_needs_providers():
    with pytest.raises(ValueError):
        FallbackTranslator([])


def test_notices_per_key_and_capability():
    notices = FallbackNotices()
    assert notices.observe("a", Served("tts", "x", "x")) is None
    assert notices.observe("a", Served("tts", "y", "x")) == "fallback"
    assert notices.observe("a", Served("tts", "z", "x")) == "fallback"  # another fallback
    assert notices.observe("b", Served("tts", "x", "x")) is None
    assert notices.observe("a", Served("translate", "x", "x")) is None
    assert notices.observe("a", Served("tts", None, "x")) is None  # nobody served: an error
    assert notices.observe("a", Served("tts", "x", "x")) == "recovered"
    notices.observe("a", Served("tts", "y", "x"))
    notices.forget("a")
    assert notices.observe("a", Served("tts", "x", "x")) is None


# --- synthesis --------------------------------------------------------------------------

async def collect(stream):
    return [chunk async for chunk in stream]


async def test_synthesis_from_the_preferred_provider():
    a, b = FakeSynth("sa"), FakeSynth("sb")
    chain = chain_of(FallbackSynthesizer, [a, b])
    assert await collect(chain.synthesize("hi", "en", None, 24000)) == [b"sa-0", b"sa-1", b"sa-2"]
    assert served_by() == Served("tts", "sa", "sa")
    assert a.streams_closed == 1


async def test_served_by_is_visible_to_the_consumer_of_the_stream():
    a, b = FakeSynth("sv-a"), FakeSynth("sv-b")
    a.fail_with = ProviderUnavailable("503")
    chain = chain_of(FallbackSynthesizer, [a, b])
    stream = chain.synthesize("hi", "en", None, 24000)
    assert await anext(stream) == b"sv-b-0"
    assert served_by() == Served("tts", "sv-b", "sv-a")  # already after the first chunk
    assert await collect(stream) == [b"sv-b-1", b"sv-b-2"]
    assert a.calls == RETRY.attempts
    await chain.close()


async def test_no_switch_once_audio_went_out():
    a, b = FakeSynth("sm-a"), FakeSynth("sm-b")
    a.fail_with, a.fail_after = ProviderUnavailable("reset"), 1
    chain = chain_of(FallbackSynthesizer, [a, b])
    got = []
    with pytest.raises(ProviderUnavailable):
        async for chunk in chain.synthesize("hi", "en", None, 24000):
            got.append(chunk)
    assert got == [b"sm-a-0"] and b.calls == 0
    assert a.streams_closed == 1
    await chain.close()


async def test_a_stall_in_the_middle_is_a_timeout_not_a_switch():
    a, b = FakeSynth("ss-a"), FakeSynth("ss-b")
    a.hang_after = 1
    chain = chain_of(FallbackSynthesizer, [a, b])
    got = []
    with pytest.raises(ProviderTimeout):
        async for chunk in chain.synthesize("hi", "en", None, 24000):
            got.append(chunk)
    assert got == [b"ss-a-0"] and b.calls == 0
    await chain.close()


async def test_a_stall_before_the_first_chunk_falls_back():
    a, b = FakeSynth("sf-a"), FakeSynth("sf-b")
    a.hang_after = 0
    chain = chain_of(FallbackSynthesizer, [a, b])
    chunks = await collect(chain.synthesize("hi", "en", None, 24000))
    assert chunks == [b"sf-b-0", b"sf-b-1", b"sf-b-2"]
    assert a.streams_closed == RETRY.attempts  # every abandoned attempt was closed
    await chain.close()


async def test_blank_text_is_a_success_without_audio():
    a, b = FakeSynth("sbl-a"), FakeSynth("sbl-b")
    chain = chain_of(FallbackSynthesizer, [a, b])
    assert await collect(chain.synthesize("  ", "en", None, 24000)) == []
    assert served_by().provider == "sbl-a" and b.calls == 0


async def test_a_consumer_that_stops_early_closes_the_vendor_stream():
    a = FakeSynth("se-a", chunks=10)
    chain = chain_of(FallbackSynthesizer, [a])
    stream = chain.synthesize("hi", "en", None, 24000)
    assert await anext(stream) == b"se-a-0"
    await stream.aclose()
    assert a.streams_closed == 1


async def test_languages_route_synthesis_and_are_the_union():
    a, b = FakeSynth("sl-a", frozenset({"en"})), FakeSynth("sl-b", frozenset({"de"}))
    chain = chain_of(FallbackSynthesizer, [a, b])
    assert chain.languages == {"en", "de"}
    chunks = await collect(chain.synthesize("hallo", "de-AT", None, 16000))
    assert chunks == [b"sl-b-0", b"sl-b-1", b"sl-b-2"]
    assert not served_by().fallback
    with pytest.raises(ProviderError, match="supports fr"):
        await collect(chain.synthesize("salut", "fr", None, 16000))


async def test_a_synthesizer_is_probed_with_a_short_text():
    clock = Clock()
    a, b = FakeSynth("sp-a"), FakeSynth("sp-b")
    a.fail_with = ProviderQuotaError("429")
    chain = chain_of(FallbackSynthesizer, [a, b], clock=clock)
    await collect(chain.synthesize("hi", "en", None, 24000))
    a.fail_with = None
    clock.now += 30
    await chain.probe_now()
    assert chain.states()["sp-a"] == "closed" and a.streams_closed == 2
    await chain.close()


# --- recognition ------------------------------------------------------------------------

def pcm(n: int, value: int = 1) -> bytes:
    return bytes([value]) * n


async def test_recognition_by_the_preferred_engine_opens_only_it():
    a, b = FakeSttEngine("ra"), FakeSttEngine("rb")
    chain = chain_of(FallbackSttEngine, [a, b])
    session = chain.open("en-US")
    for _ in range(3):
        await session.feed(pcm(320))
    assert await session.finish() == "ra heard 960 bytes"
    assert served_by() == Served("stt", "ra", "ra")
    assert (len(a.sessions), len(b.sessions)) == (1, 0)  # cloud sessions bill: opened lazily
    await session.close()
    assert a.sessions[0].closed


async def test_a_failure_before_output_replays_the_utterance_into_the_next_engine():
    a, b = FakeSttEngine("rr-a"), FakeSttEngine("rr-b")
    a.fail_with, a.fail_after_feeds = ProviderUnavailable("socket closed"), 2
    chain = chain_of(FallbackSttEngine, [a, b])
    session = chain.open("en")
    chunks = [pcm(320, 1), pcm(320, 2), pcm(320, 3), pcm(320, 4)]
    for chunk in chunks:
        await session.feed(chunk)
    assert b.sessions[0].fed == chunks  # the first two replayed, in order
    assert await session.finish() == "rr-b heard 1280 bytes"
    assert served_by() == Served("stt", "rr-b", "rr-a")
    assert a.sessions[0].closed  # the broken session was let go
    await chain.close()


async def test_a_failing_finish_before_output_is_replayed_too():
    a, b = FakeSttEngine("rf-a"), FakeSttEngine("rf-b")
    a.fail_with, a.fail_finish = ProviderTimeout("no final"), True
    chain = chain_of(FallbackSttEngine, [a, b])
    session = chain.open("en")
    await session.feed(pcm(100))
    await session.feed(pcm(60))
    assert await session.finish() == "rf-b heard 160 bytes"
    await chain.close()


async def test_an_engine_that_produced_a_partial_keeps_the_utterance():
    a, b = FakeSttEngine("rk-a", partials=True), FakeSttEngine("rk-b")
    chain = chain_of(FallbackSttEngine, [a, b])
    session = chain.open("en")
    assert await session.feed(pcm(320)) == "rk-a partial 1"
    a.fail_with = ProviderUnavailable("reset")
    with pytest.raises(ProviderUnavailable):
        await session.feed(pcm(320))
    assert b.sessions == []  # no switch in the middle of an utterance that produced output
    a.fail_with = None
    assert await session.feed(pcm(10)) == "rk-a partial 1"  # a new utterance, a new session
    assert len(a.sessions) == 2
    await chain.close()


async def test_the_next_utterance_chooses_again():
    clock = Clock()
    a, b = FakeSttEngine("rn-a"), FakeSttEngine("rn-b")
    chain = chain_of(FallbackSttEngine, [a, b], clock=clock)
    session = chain.open("en")
    a.fail_with = ProviderAuthError("1008")  # fatal: the breaker opens at once
    await session.feed(pcm(10))
    assert await session.finish() == "rn-b heard 10 bytes"
    a.fail_with = None
    await session.feed(pcm(20))
    assert await session.finish() == "rn-b heard 20 bytes"  # skipped while open
    assert len(a.sessions) == 1
    clock.now += 30  # the open period is over: this utterance is the probe
    await session.feed(pcm(30))
    assert await session.finish() == "rn-a heard 30 bytes"
    assert chain.states()["rn-a"] == "closed"
    await chain.close()


async def test_when_no_engine_can_recognise_the_utterance_is_given_up():
    a, b = FakeSttEngine("rx-a"), FakeSttEngine("rx-b")
    a.fail_with = b.fail_with = ProviderUnavailable("down")
    chain = chain_of(FallbackSttEngine, [a, b])
    session = chain.open("en")
    tried = r"rx-a \(ProviderUnavailable\), rx-b \(ProviderUnavailable\)"
    with pytest.raises(ProviderError, match=tried):
        await session.feed(pcm(10))
    assert served_by() == Served("stt", None, "rx-a")
    assert await session.finish() == ""  # nothing left of that utterance
    await chain.close()


async def test_engines_are_routed_by_language():
    a = FakeSttEngine("rl-a", frozenset({"en"}))
    b = FakeSttEngine("rl-b", frozenset({"en", "es"}))
    chain = chain_of(FallbackSttEngine, [a, b])
    assert chain.languages == {"en", "es"}
    session = chain.open("es")
    await session.feed(pcm(10))
    assert await session.finish() == "rl-b heard 10 bytes"
    assert not served_by().fallback
    with pytest.raises(ProviderError, match="supports de"):
        await chain.open("de").feed(pcm(10))


async def test_audio_is_resampled_for_an_engine_of_another_rate():
    a = FakeSttEngine("rs-a")
    b = FakeSttEngine("rs-b", sample_rate=8000)
    a.fail_with = ProviderUnavailable("down")
    chain = chain_of(FallbackSttEngine, [a, b])
    assert chain.sample_rate == 16000
    session = chain.open("en")
    await session.feed(bytes(3200))  # 100 ms at 16 kHz
    assert [len(p) for p in b.sessions[0].fed] == [1600]  # 100 ms at 8 kHz
    await chain.close()


async def test_finish_without_audio_is_silence():
    chain = chain_of(FallbackSttEngine, [FakeSttEngine("re-a")])
    assert await chain.open("en").finish() == ""


async def test_an_stt_engine_is_probed_with_silence():
    clock = Clock()
    a, b = FakeSttEngine("rp-a"), FakeSttEngine("rp-b")
    a.fail_with = ProviderAuthError("1008")
    chain = chain_of(FallbackSttEngine, [a, b], clock=clock)
    session = chain.open("en")
    await session.feed(pcm(10))
    await session.finish()
    a.fail_with = None
    clock.now += 30
    await chain.probe_now()
    assert chain.states()["rp-a"] == "closed"
    assert a.sessions[-1].closed
    await chain.close()


def test_breaker_settings_reach_every_member():
    chain = FallbackTranslator([FakeTranslator("tc-a")], breaker=BreakerConfig(failure_threshold=1))
    assert chain.members[0].breaker.config.failure_threshold == 1


async def test_every_attempt_is_counted_and_timed_by_provider_and_outcome():
    a, b = FakeTranslator("metered-a"), FakeTranslator("metered-b")
    a.fail_with = ProviderUnavailable("503")
    chain = chain_of(FallbackTranslator, [a, b])
    calls = dict(name="parley_provider_calls_total", capability="translate")
    before = (metric(**calls, provider="metered-a", outcome="provider_unavailable"),
              metric(**calls, provider="metered-b", outcome="ok"),
              metric("parley_provider_seconds_count", capability="translate", provider="metered-b"))
    assert await chain.translate("hi", "en", "es") == "metered-b:hi"
    assert metric(**calls, provider="metered-a", outcome="provider_unavailable") == before[0] + 1
    assert metric(**calls, provider="metered-b", outcome="ok") == before[1] + 1
    assert metric("parley_provider_seconds_count", capability="translate", provider="metered-b") == before[2] + 1
    await chain.close()

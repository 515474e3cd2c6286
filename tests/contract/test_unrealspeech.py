"""UnrealSpeechSynthesizer against the fake Unreal Speech server, and its pure functions."""

from __future__ import annotations

import time

import pytest

from services.tts.providers.http_stream import text_pieces
from services.tts.providers.unrealspeech import (
    MAX_TEXT_CHARS,
    UnrealSpeechSynthesizer,
    pick_voice,
    stream_request,
    unrealspeech_error,
)
from shared.audio import duration_s, rms
from shared.errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderQuotaError,
    ProviderTimeout,
    ProviderUnavailable,
)
from shared.natsd import free_port
from shared.secrets import Secret
from shared.usage import Usage, metering
from tests.fakes import drain
from tests.fakes.unrealspeech_server import (
    PIECE_BYTES,
    SPEECH_S_PER_CHAR,
    FakeUnrealSpeech,
)

KEY = "us-test-5ecret-key-0123456789"
TWO = "Good evening, everyone. Thank you all for coming tonight."
THREE = "One sentence first. Then another one! And the last of them."


@pytest.fixture
def server():
    with FakeUnrealSpeech(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def tts(server):
    engine = UnrealSpeechSynthesizer(Secret(KEY), base_url=server.url, timeout_s=0.5)
    yield engine
    await engine.close()


def expected_s(text: str) -> float:
    pieces = text_pieces(text, MAX_TEXT_CHARS)
    return sum(max(0.1, SPEECH_S_PER_CHAR * len(piece)) for piece in pieces)


# ---- pure functions ---------------------------------------------------------------------


def test_request_has_the_documented_fields():
    assert stream_request("Hello.", "Scarlett") == {
        "Text": "Hello.", "VoiceId": "Scarlett", "Bitrate": "192k", "Speed": 0.0,
        "Pitch": 1.0, "Codec": "pcm_s16le", "Temperature": 0.25}


@pytest.mark.parametrize("session, language, default, chosen", [
    (None, "en", "Scarlett", "Scarlett"), ("sierra", "en-US", "Scarlett", "Sierra"),
    ("alloy", "en", "Scarlett", "Scarlett"), (None, "es-MX", "Scarlett", "Lucía"),
    ("Javier", "es", "Scarlett", "Javier"), ("Sierra", "fr", "Scarlett", "Élodie"),
    (None, "en", "Unknown", "Autumn"),
])  # fmt: skip
def test_voice_fits_the_language(session, language, default, chosen):
    assert pick_voice(session, language, default) == chosen


def test_no_voice_for_a_language_is_an_error():
    with pytest.raises(ProviderError):
        pick_voice(None, "de", "Scarlett")


@pytest.mark.parametrize("status, kind, retryable", [
    (401, ProviderAuthError, False), (403, ProviderAuthError, False),
    (429, ProviderQuotaError, False), (500, ProviderUnavailable, True),
    (503, ProviderUnavailable, True), (400, ProviderError, False),
])  # fmt: skip
def test_error_statuses_map_to_the_vocabulary(status, kind, retryable):
    error = unrealspeech_error(status, f"bad key {KEY}".encode(), Secret(KEY))
    assert type(error) is kind and error.retryable is retryable and KEY not in str(error)


# ---- against the fake -------------------------------------------------------------------


@pytest.mark.parametrize("rate", [16000, 24000, 8000])
async def test_speaks_at_the_requested_rate(tts, rate):
    chunks, error = await drain(tts.synthesize(TWO, "en", None, rate))
    assert error is None
    assert all(0 < len(c) <= int(rate * 0.2) * 2 and len(c) % 2 == 0 for c in chunks)
    audio = b"".join(chunks)
    assert duration_s(audio, rate) == pytest.approx(expected_s(TWO), abs=0.01)
    assert rms(audio) > 4000


async def test_requests_are_shaped_as_documented(server, tts):
    await drain(tts.synthesize(TWO, "en", None, 16000))
    assert [(r.method, r.path) for r in server.requests] == [("POST", "/stream")] * 2
    for request, sentence in zip(server.requests, text_pieces(TWO, MAX_TEXT_CHARS)):
        assert request.headers["authorization"] == f"Bearer {KEY}"
        assert request.headers["content-type"] == "application/json"
        assert request.json == {"Text": sentence, "VoiceId": "Scarlett", "Bitrate": "192k",
                                "Speed": 0.0, "Pitch": 1.0, "Codec": "pcm_s16le",
                                "Temperature": 0.25}


async def test_long_text_stays_under_the_stream_limit(server, tts):
    sentence = " ".join(["syllable"] * 150) + "."  # ~1,350 characters, one sentence
    chunks, error = await drain(tts.synthesize(sentence, "en", None, 16000))
    assert error is None and chunks
    texts = [r.json["Text"] for r in server.requests]
    assert len(texts) == 2 and all(len(t) <= MAX_TEXT_CHARS for t in texts)
    assert " ".join(texts) == sentence


async def test_voices_follow_the_language_and_the_session(server, tts):
    await drain(tts.synthesize("Hola.", "es", None, 16000))
    await drain(tts.synthesize("Hello.", "en", "Daniel", 16000))
    assert [r.json["VoiceId"] for r in server.requests] == ["Lucía", "Daniel"]
    assert {"en", "es", "fr", "zh", "hi", "it", "pt"} <= tts.languages
    with pytest.raises(ProviderError):
        await anext(tts.synthesize("Hallo.", "de", None, 16000))


async def test_usage_counts_characters(tts):
    with metering() as meter:
        await drain(tts.synthesize(TWO, "en", None, 16000))
    assert meter.records == [
        Usage(provider="unrealspeech", model="stream", capability="tts", characters=len(p))
        for p in text_pieces(TWO, MAX_TEXT_CHARS)]


async def test_first_audio_leaves_after_the_first_sentence_only(server, tts):
    server.knobs.set(latency_s=0.15)
    stream = tts.synthesize(THREE, "en", None, 16000)
    assert await anext(stream) and len(server.requests) == 1
    _, error = await drain(stream)
    assert error is None and len(server.requests) == 3


@pytest.mark.parametrize("status, kind", [
    (401, ProviderAuthError), (403, ProviderAuthError), (429, ProviderQuotaError),
    (500, ProviderUnavailable), (503, ProviderUnavailable),
])  # fmt: skip
async def test_failures_before_audio_raise_mapped_errors(server, tts, status, kind):
    server.knobs.set(status=status)
    chunks, error = await drain(tts.synthesize(TWO, "en", None, 16000))
    assert chunks == [] and type(error) is kind
    assert error.retryable is (status >= 500) and len(server.requests) == 1


async def test_a_failure_after_audio_started_still_raises(server, tts):
    server.knobs.set(status=500, from_request=2)
    chunks, error = await drain(tts.synthesize(THREE, "en", None, 16000))
    assert chunks and isinstance(error, ProviderUnavailable) and len(server.requests) == 2
    assert duration_s(b"".join(chunks), 16000) == pytest.approx(
        expected_s("One sentence first."), abs=0.01)


async def test_a_hang_is_cut_at_the_timeout(server, tts):
    server.knobs.set(hang=True)
    started = time.monotonic()
    chunks, error = await drain(tts.synthesize(TWO, "en", None, 16000))
    assert chunks == [] and isinstance(error, ProviderTimeout) and error.retryable
    assert 0.4 <= time.monotonic() - started < 2.0


async def test_a_stall_or_a_drop_mid_body_raises(server, tts):
    text = "A rather long sentence that takes its time."
    server.knobs.set(stall_after_bytes=3 * PIECE_BYTES)
    _, error = await drain(tts.synthesize(text, "en", None, 22050))
    assert isinstance(error, ProviderTimeout)
    server.knobs.reset()
    server.knobs.set(cut_after_bytes=2 * PIECE_BYTES)
    _, error = await drain(tts.synthesize(text, "en", None, 22050))
    assert isinstance(error, ProviderUnavailable)


async def test_a_body_that_is_not_audio_is_a_bad_response(server, tts):
    server.knobs.set(malformed=True)
    chunks, error = await drain(tts.synthesize(TWO, "en", None, 16000))
    assert chunks == [] and isinstance(error, ProviderBadResponse)


async def test_the_key_never_shows(server):
    wrong = "us-wrong-secret-31337"
    engine = UnrealSpeechSynthesizer(Secret(wrong), base_url=server.url, timeout_s=0.5)
    _, error = await drain(engine.synthesize(TWO, "en", None, 16000))
    await engine.close()
    assert isinstance(error, ProviderAuthError)
    texts = [str(error), repr(error), str(error.__cause__), repr(engine)]
    assert not any(wrong in text for text in texts)


async def test_a_refused_connection_is_unavailable():
    engine = UnrealSpeechSynthesizer(Secret(KEY), base_url=f"http://127.0.0.1:{free_port()}",
                                     timeout_s=0.5)
    _, error = await drain(engine.synthesize(TWO, "en", None, 16000))
    await engine.close()
    assert isinstance(error, ProviderUnavailable) and error.retryable

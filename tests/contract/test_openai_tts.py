"""OpenAISynthesizer against the fake OpenAI server; the streaming pieces it shares."""

from __future__ import annotations

import time

import httpx
import pytest

from services.tts.providers.http_stream import PcmStream, is_audio, text_pieces
from services.tts.providers.openai_tts import (
    MAX_INPUT_CHARS,
    OpenAISynthesizer,
    pick_voice,
    speech_request,
)
from shared.audio import duration_s, resample, rms, tone
from shared.errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderQuotaError,
    ProviderTimeout,
    ProviderUnavailable,
)
from shared.secrets import Secret
from shared.usage import metering
from tests.fakes import drain
from tests.fakes.openai_server import PIECE_BYTES, SPEECH_S_PER_CHAR, FakeOpenAI

KEY = "sk-test-tts-5ecret-0123456789"
TWO = "The weather is fine today. Shall we walk to the harbour?"
THREE = "First sentence here. Second one follows! And a third, to finish."


@pytest.fixture
def server():
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def tts(server):
    engine = OpenAISynthesizer(Secret(KEY), base_url=server.url, timeout_s=0.5)
    yield engine
    await engine.close()


def expected_s(text: str) -> float:
    return sum(max(0.1, SPEECH_S_PER_CHAR * len(piece)) for piece in text_pieces(text, 4096))


# ---- pure pieces ------------------------------------------------------------------------


def test_text_pieces_are_sentences_that_fit_the_limit():
    assert text_pieces(TWO, 4096) == ["The weather is fine today.", "Shall we walk to the harbour?"]
    long = "word " * 30 + "end."
    pieces = text_pieces(long, 40)
    assert all(len(p) <= 40 for p in pieces) and " ".join(pieces) == long.strip()
    assert text_pieces("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    assert text_pieces("  \n ", 10) == []


@pytest.mark.parametrize("to_hz", [8000, 16000, 24000, 48000])
def test_pcm_stream_matches_a_whole_clip_resample(to_hz):
    clip = tone(440.0, 1.3, 24000)
    stream, chunks = PcmStream(24000, to_hz), []
    for at in range(0, len(clip), 999):  # odd-sized reads split samples in two
        chunks += stream.feed(clip[at:at + 999])
    chunks += stream.finish()
    limit = int(to_hz * 0.2) * 2
    assert all(len(c) <= limit and len(c) % 2 == 0 for c in chunks)
    assert all(len(c) == limit for c in chunks[:-1])
    whole = resample(clip, 24000, to_hz)
    assert abs(len(b"".join(chunks)) - len(whole)) <= 8
    assert rms(b"".join(chunks)) == pytest.approx(rms(whole), rel=0.02)


def test_pcm_stream_passes_same_rate_audio_through():
    clip = tone(300.0, 0.5, 16000) + b"\x01"  # a dangling odd byte is dropped
    stream = PcmStream(16000, 16000)
    out = stream.feed(clip[:777]) + stream.feed(clip[777:]) + stream.finish()
    assert b"".join(out) == clip[:-1]


def test_voice_and_request():
    assert pick_voice("Nova", "alloy") == "nova"
    assert pick_voice("Scarlett", "alloy") == "alloy"
    assert pick_voice(None, "coral") == "coral"
    assert speech_request("gpt-4o-mini-tts", "ash", "Hi.") == {
        "model": "gpt-4o-mini-tts", "input": "Hi.", "voice": "ash", "response_format": "pcm"}
    assert speech_request("m", "ash", "Hi.", "Calm.")["instructions"] == "Calm."


@pytest.mark.parametrize("kind, audio", [
    ("audio/pcm", True), ("application/octet-stream", True), ("", True),
    ("audio/L16; rate=22050", True),
    ("application/json", False), ("text/plain; charset=utf-8", False), ("text/html", False),
])  # fmt: skip
def test_is_audio(kind, audio):
    assert is_audio(kind) is audio


# ---- against the fake -------------------------------------------------------------------


@pytest.mark.parametrize("rate", [16000, 24000, 8000])
async def test_speaks_at_the_requested_rate(tts, rate):
    chunks, error = await drain(tts.synthesize(TWO, "en", None, rate))
    assert error is None
    assert all(0 < len(c) <= int(rate * 0.2) * 2 and len(c) % 2 == 0 for c in chunks)
    audio = b"".join(chunks)
    assert duration_s(audio, rate) == pytest.approx(expected_s(TWO), abs=0.01)
    assert rms(audio) > 4000  # the fake's tone, not silence


async def test_requests_sentence_by_sentence_as_documented(server, tts):
    await drain(tts.synthesize(TWO, "en-GB", None, 16000))
    assert [r.path for r in server.requests] == ["/v1/audio/speech"] * 2
    for request, sentence in zip(server.requests, text_pieces(TWO, MAX_INPUT_CHARS)):
        assert request.method == "POST"
        assert request.headers["authorization"] == f"Bearer {KEY}"
        assert request.json == {"model": "gpt-4o-mini-tts", "input": sentence,
                                "voice": "alloy", "response_format": "pcm"}


async def test_session_voice_when_openai_has_it(server, tts):
    await drain(tts.synthesize("Hi.", "fr", "Shimmer", 16000))
    await drain(tts.synthesize("Hi.", "fr", "Scarlett", 16000))
    assert [r.json["voice"] for r in server.requests] == ["shimmer", "alloy"]


async def test_usage_counts_characters(tts):
    with metering() as meter:
        await drain(tts.synthesize(TWO, "en", None, 16000))
    assert [(u.provider, u.model, u.capability) for u in meter.records] == [
        ("openai", "gpt-4o-mini-tts", "tts")] * 2
    assert sum(u.characters for u in meter.records) == sum(map(len, text_pieces(TWO, 4096)))


async def test_first_audio_leaves_after_the_first_sentence_only(server, tts):
    server.knobs.set(latency_s=0.15)
    stream = tts.synthesize(THREE, "en", None, 16000)
    first = await anext(stream)
    assert first and len(server.requests) == 1  # sentences 2 and 3 not even asked for yet
    rest, error = await drain(stream)
    assert error is None and len(server.requests) == 3


async def test_nothing_to_say_asks_nothing(server, tts):
    assert await drain(tts.synthesize(" \n ", "en", None, 16000)) == ([], None)
    assert server.requests == []


async def test_bad_arguments_are_refused_before_any_request(server, tts):
    with pytest.raises(ProviderError):
        await anext(tts.synthesize("Hi.", "xx-unknown", None, 16000))
    with pytest.raises(ValueError):
        await anext(tts.synthesize("Hi.", "en", None, 0))
    assert server.requests == []


@pytest.mark.parametrize("status, code, kind", [
    (401, None, ProviderAuthError), (403, None, ProviderAuthError),
    (429, "insufficient_quota", ProviderQuotaError), (429, None, ProviderQuotaError),
    (500, None, ProviderUnavailable), (503, None, ProviderUnavailable),
])  # fmt: skip
async def test_failures_before_audio_raise_mapped_errors(server, tts, status, code, kind):
    server.knobs.set(status=status, error_code=code)
    chunks, error = await drain(tts.synthesize(TWO, "en", None, 16000))
    assert chunks == [] and type(error) is kind
    assert error.retryable is (status >= 500) and len(server.requests) == 1


async def test_a_failure_after_audio_started_still_raises(server, tts):
    server.knobs.set(status=503, from_request=2)
    chunks, error = await drain(tts.synthesize(THREE, "en", None, 16000))
    assert chunks and isinstance(error, ProviderUnavailable)
    assert duration_s(b"".join(chunks), 16000) == pytest.approx(
        expected_s("First sentence here."), abs=0.01)  # the whole first sentence, no more
    assert len(server.requests) == 2


async def test_a_hang_is_cut_at_the_timeout(server, tts):
    server.knobs.set(hang=True)
    started = time.monotonic()
    chunks, error = await drain(tts.synthesize(TWO, "en", None, 16000))
    assert chunks == [] and isinstance(error, ProviderTimeout) and error.retryable
    assert 0.4 <= time.monotonic() - started < 2.0


async def test_a_stall_mid_body_is_a_timeout(server, tts):
    server.knobs.set(stall_after_bytes=3 * PIECE_BYTES)
    chunks, error = await drain(tts.synthesize("A rather long sentence that takes time.", "en",
                                               None, 24000))
    assert isinstance(error, ProviderTimeout)
    assert 0 < len(b"".join(chunks)) <= 3 * PIECE_BYTES


async def test_a_dropped_connection_mid_body_is_unavailable(server, tts):
    server.knobs.set(cut_after_bytes=2 * PIECE_BYTES)
    chunks, error = await drain(tts.synthesize("A rather long sentence that takes time.", "en",
                                               None, 24000))
    assert isinstance(error, ProviderUnavailable) and error.retryable


@pytest.mark.parametrize("knobs", [{"malformed": True}, {"audio": b""}])
async def test_a_body_that_is_not_audio_is_a_bad_response(server, tts, knobs):
    server.knobs.set(**knobs)
    chunks, error = await drain(tts.synthesize(TWO, "en", None, 16000))
    assert chunks == [] and isinstance(error, ProviderBadResponse) and not error.retryable


async def test_the_key_never_shows(server):
    wrong = "sk-wrong-tts-secret-4242"
    engine = OpenAISynthesizer(Secret(wrong), base_url=server.url, timeout_s=0.5)
    _, error = await drain(engine.synthesize(TWO, "en", None, 16000))
    await engine.close()
    assert isinstance(error, ProviderAuthError)
    texts = [str(error), repr(error), str(error.__cause__), repr(engine)]
    assert not any(wrong in text for text in texts)


async def test_closes_only_a_client_it_owns(server):
    client = httpx.AsyncClient()
    engine = OpenAISynthesizer(Secret(KEY), base_url=server.url, http=client)
    chunks, error = await drain(engine.synthesize("Hi.", "en", None, 16000))
    await engine.close()
    assert chunks and error is None and not client.is_closed
    await client.aclose()


async def test_a_listener_who_stops_early_frees_the_connection(server):
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=1))
    engine = OpenAISynthesizer(Secret(KEY), base_url=server.url, http=client, timeout_s=0.5)
    server.knobs.set(stall_after_bytes=3 * PIECE_BYTES)  # the first body never ends
    stream = engine.synthesize("A rather long sentence that takes time.", "en", None, 24000)
    assert await anext(stream)
    await stream.aclose()
    server.knobs.reset()
    chunks, error = await drain(engine.synthesize("Hi.", "en", None, 16000))
    assert chunks and error is None  # the one pooled connection was given back
    await client.aclose()


# ---- the fake's transcription endpoint, for the STT adapter -------------------------------


@pytest.mark.parametrize("model, usage_type", [("gpt-4o-mini-transcribe", "tokens"),
                                               ("whisper-1", "duration")])
async def test_fake_transcribes_multipart_uploads(server, model, usage_type):
    server.knobs.set(reply_text="good morning")
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{server.url}/audio/transcriptions", headers={"Authorization": f"Bearer {KEY}"},
            files={"file": ("speech.wav", bytes(64000), "audio/wav")},
            data={"model": model, "language": "en"})
    assert response.status_code == 200
    assert response.json()["text"] == "good morning"
    assert response.json()["usage"]["type"] == usage_type
    request = server.requests[-1]
    assert request.form == {"model": model, "language": "en"}
    assert len(request.files["file"]) == 64000

"""OpenAITranscriber against the fake transcription endpoint, and its pure functions."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback

import httpx
import pytest

from services.stt.providers.openai_transcribe import (
    OpenAITranscriber,
    transcript,
    wav_bytes,
)
from shared.http_errors import openai_error
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
from tests.fakes.openai_transcribe_server import FakeOpenAITranscribe

KEY = "sk-test-5ecret-key-0123456789"
HALF_S = bytes(range(256)) * 62 + bytes(128)  # 500 ms of PCM16 at 16 kHz, not all zeros


@pytest.fixture
def fake():
    with FakeOpenAITranscribe(api_key=KEY) as server:
        yield server


@pytest.fixture
async def http():
    async with httpx.AsyncClient() as client:
        yield client


def engine_for(fake, http=None, key: str = KEY, **options) -> OpenAITranscriber:
    return OpenAITranscriber(Secret(key), base_url=fake.base_url, http=http,
                             **({"timeout_s": 1.0} | options))


async def utterance(engine, language: str = "en", chunks: int = 2) -> str:
    session = engine.open(language)
    for _ in range(chunks):
        assert await session.feed(HALF_S) is None  # the endpoint has no partials
    try:
        return await session.finish()
    finally:
        await session.close()


# ---- pure functions ----------------------------------------------------------------------

def response(status: int, body: bytes | str) -> httpx.Response:
    return httpx.Response(status, content=body if isinstance(body, bytes) else body.encode())


def test_wav_is_pcm16_mono_at_the_rate():
    wav = wav_bytes(HALF_S, 16000)
    assert wav[:4] == b"RIFF" and wav[8:16] == b"WAVEfmt " and wav.endswith(HALF_S)
    assert int.from_bytes(wav[24:28], "little") == 16000


@pytest.mark.parametrize("body, expected", [
    ('{"text": "Hello."}', ("Hello.", 0, 0)),
    ('{"text": "Hi", "usage": {"type": "tokens", "input_tokens": 14, "output_tokens": 3,'
     ' "total_tokens": 17}}', ("Hi", 14, 3)),
    ('{"text": "Hi", "usage": {"type": "duration", "seconds": 2}}', ("Hi", 0, 0)),
])
def test_documented_answers_give_text_and_tokens(body, expected):
    assert transcript(response(200, body)) == expected


@pytest.mark.parametrize("body", [
    "<html>", "[]", '{"txt": "Hi"}', '{"text": 5}', '{"text": "Hi", "usage": ["tokens"]}',
    '{"text": "Hi", "usage": {"type": "tokens", "input_tokens": "14"}}',
])
def test_answers_off_the_documented_shape_are_bad_responses(body):
    with pytest.raises(ProviderBadResponse):
        transcript(response(200, body))


@pytest.mark.parametrize("status, kind, retryable", [
    (401, ProviderAuthError, False), (403, ProviderAuthError, False),
    (429, ProviderQuotaError, False), (500, ProviderUnavailable, True),
    (503, ProviderUnavailable, True), (408, ProviderTimeout, True),
    (400, ProviderError, False), (413, ProviderError, False),
])
def test_statuses_map_to_errors(status, kind, retryable):
    error = openai_error(status, b"")
    assert type(error) is kind and error.retryable is retryable


def test_only_an_error_code_is_taken_from_an_error_body():
    body = b'{"error": {"message": "Incorrect API key provided: sk-123", "code": "invalid_api_key"}}'
    assert "invalid_api_key" in str(openai_error(401, body)) and "sk-123" not in str(openai_error(401, body))
    assert "html" not in str(openai_error(500, b"<html>"))
    assert "sk-123" not in str(openai_error(400, b'{"error": {"code": "sk-123 leaked?"}}', Secret("sk-123")))


# ---- against the fake --------------------------------------------------------------------

async def test_one_upload_per_utterance_as_documented(fake, http):
    fake.knobs.text = " Hello there. "
    engine = engine_for(fake, http)
    assert await utterance(engine, "en-US") == "Hello there."
    (upload,) = fake.requests
    assert upload.path == "/v1/audio/transcriptions"
    assert upload.authorization == f"Bearer {KEY}"
    assert upload.fields == {"model": "gpt-4o-mini-transcribe", "response_format": "json",
                             "language": "en"}
    assert upload.filename.endswith(".wav") and upload.file_type == "audio/wav"
    assert upload.wav() == (16000, 1, 2, HALF_S * 2)


async def test_a_session_spans_utterances_and_whisper_works_too(fake, http):
    engine = engine_for(fake, http, model="whisper-1")
    session = engine.open("es")
    await session.feed(HALF_S)
    assert await session.finish() == "hello world"
    assert await session.finish() == ""  # no audio: no request
    await session.feed(HALF_S)
    await session.feed(HALF_S)
    await session.finish()
    await session.close()
    first, second = fake.requests
    assert first.fields["model"] == second.fields["model"] == "whisper-1"
    assert first.fields["language"] == "es"
    assert len(first.wav()[3]) == len(HALF_S) and len(second.wav()[3]) == 2 * len(HALF_S)


async def test_a_language_that_is_not_iso_639_1_is_left_to_detection(fake, http):
    await utterance(engine_for(fake, http), "cmn")
    assert "language" not in fake.requests[0].fields


async def test_its_own_client_when_none_is_shared_and_a_shared_one_left_open(fake, http):
    engine = engine_for(fake)
    assert await utterance(engine) == "hello world"
    await engine.close()
    shared = engine_for(fake, http)
    await utterance(shared)
    await shared.close()
    assert not http.is_closed  # its owner, the worker, closes it


async def fails(engine) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await utterance(engine)
    text = "".join(traceback.format_exception(caught.value)) + repr(caught.value)
    assert KEY not in text and "wrong-key" not in text
    return caught.value


async def test_a_bad_key_is_an_auth_error_without_the_key_in_it(fake, http):
    error = await fails(engine_for(fake, http, key="wrong-key"))  # the fake quotes it back
    assert type(error) is ProviderAuthError and not error.retryable
    assert "invalid_api_key" in str(error)


@pytest.mark.parametrize("status, code, kind, retryable", [
    (403, None, ProviderAuthError, False),
    (429, "insufficient_quota", ProviderQuotaError, False),
    (429, "rate_limit_exceeded", ProviderQuotaError, False),
    (500, None, ProviderUnavailable, True),
    (503, None, ProviderUnavailable, True),
    (400, None, ProviderError, False),
])
async def test_error_statuses_map_to_errors(fake, http, status, code, kind, retryable):
    fake.knobs.status, fake.knobs.error_code = status, code
    error = await fails(engine_for(fake, http))
    assert type(error) is kind and error.retryable is retryable


async def test_a_malformed_answer_is_a_bad_response(fake, http):
    fake.knobs.malformed = True
    error = await fails(engine_for(fake, http))
    assert type(error) is ProviderBadResponse and not error.retryable


async def test_a_hang_is_cut_at_the_timeout(fake, http):
    fake.knobs.hang = True
    started = time.monotonic()
    error = await fails(engine_for(fake, http, timeout_s=0.3))
    assert type(error) is ProviderTimeout and error.retryable
    assert time.monotonic() - started < 1.0


async def test_latency_under_the_timeout_is_fine(fake, http):
    fake.knobs.latency_s = 0.2
    assert await utterance(engine_for(fake, http)) == "hello world"


async def test_a_refused_connection_is_unavailable(http):
    engine = OpenAITranscriber(Secret(KEY), base_url=f"http://127.0.0.1:{free_port()}/v1",
                               http=http, timeout_s=1.0)
    error = await fails(engine)
    assert type(error) is ProviderUnavailable and error.retryable


async def test_cancelling_an_upload_leaves_the_engine_usable(fake, http):
    fake.knobs.latency_s = 0.5
    engine = engine_for(fake, http)
    task = asyncio.create_task(utterance(engine))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    fake.knobs.latency_s = 0.0
    assert await utterance(engine) == "hello world"


async def test_the_key_stays_out_of_reprs_and_debug_logs(fake, http, caplog):
    engine = engine_for(fake, http)
    assert KEY not in repr(engine) and KEY not in repr(engine.__dict__)
    caplog.set_level(logging.DEBUG)
    await utterance(engine)
    assert KEY not in caplog.text


# ---- usage -------------------------------------------------------------------------------

async def test_usage_is_the_audio_and_the_reported_tokens(fake, http):
    with metering() as meter:
        await utterance(engine_for(fake, http), chunks=3)
    assert meter.records == [Usage("openai", "gpt-4o-mini-transcribe", "stt",
                                   audio_seconds=1.5, input_tokens=14, output_tokens=3)]


async def test_no_usage_for_a_failed_upload(fake, http):
    fake.knobs.status = 503
    with metering() as meter:
        await fails(engine_for(fake, http))
    assert meter.records == []

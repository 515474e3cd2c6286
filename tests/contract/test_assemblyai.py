"""AssemblyAIEngine against the fake v3 server, and its pure wire functions."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from services.stt.providers.assemblyai import (
    AssemblyAIEngine,
    AudioBatcher,
    Begin,
    Other,
    ServerError,
    Termination,
    Turn,
    TurnTracker,
    close_error,
    parse_event,
    status_error,
)
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
from shared.usage import metering
from tests.fakes.assemblyai_server import FakeAssemblyAI, unformatted

KEY = "aai-test-5ecret-key-0123456789"
FIRST, SECOND = "Hello there, friend.", "Second one!"
HALF_S = bytes(16000)  # 500 ms of PCM16 at 16 kHz, as the worker feeds it
MS = 32  # bytes per ms


@pytest.fixture
def fake():
    with FakeAssemblyAI(api_key=KEY, transcripts=[FIRST, SECOND]) as server:
        yield server


def engine_for(fake, key: str = KEY, **options) -> AssemblyAIEngine:
    waits = {"timeout_s": 1.0, "settle_s": 0.1, "format_wait_s": 0.3, "terminate_wait_s": 0.5}
    return AssemblyAIEngine(Secret(key), base_url=fake.base_url, **(waits | options))


async def speak(session, chunks: int, pause_s: float = 0.05) -> list[str]:
    """Feed 500 ms chunks at a pace that lets the fake's partials arrive; the partials."""
    partials = []
    for _ in range(chunks):
        partial = await session.feed(HALF_S)
        if partial:
            partials.append(partial)
        await asyncio.sleep(pause_s)
    return partials


# ---- pure: vendor payloads → events ---------------------------------------------------

DOCS_PARTIAL = {  # shaped like the docs' "Message sequence" page
    "turn_order": 0, "turn_is_formatted": False, "end_of_turn": False, "transcript": "hi my",
    "end_of_turn_confidence": 0.001037, "utterance": "", "type": "Turn",
    "words": [{"start": start, "end": start + 80, "text": text, "confidence": 0.87,
               "word_is_final": final}
              for start, text, final in [(1920, "hi", True), (2800, "my", True),
                                         (2960, "name", False)]],
}


@pytest.mark.parametrize("payload, event", [
    ({"type": "Begin", "id": "de5d9927", "expires_at": 1759796682}, Begin("de5d9927")),
    (DOCS_PARTIAL, Turn(0, "hi my", False, False, 1920)),
    (DOCS_PARTIAL | {"end_of_turn": True, "transcript": "hi my name"},
     Turn(0, "hi my name", True, False, 1920)),
    (DOCS_PARTIAL | {"end_of_turn": True, "turn_is_formatted": True, "transcript": "Hi, my name."},
     Turn(0, "Hi, my name.", True, True, 1920)),
    (DOCS_PARTIAL | {"words": [], "transcript": ""}, Turn(0, "", False, False, None)),
    ({"type": "Termination", "audio_duration_seconds": 12, "session_duration_seconds": 14},
     Termination(12, 14)),
    ({"type": "Error", "error_code": 3008, "error": "Session Expired: Maximum session duration"},
     ServerError(3008, "Session Expired: Maximum session duration")),
    ({"error": "Model deprecated"}, ServerError(None, "Model deprecated")),
    ({"type": "SpeechStarted", "timestamp": 1920}, Other("SpeechStarted")),
])
def test_documented_messages_become_events(payload, event):
    assert parse_event(json.dumps(payload)) == event


@pytest.mark.parametrize("raw", ["{not json", "[]", "{}", '"Turn"'] + [json.dumps(p) for p in [
    {"type": "Turn"}, {"type": "Begin"}, {"type": "Termination", "session_duration_seconds": "14"},
    DOCS_PARTIAL | {"turn_order": "0"}, DOCS_PARTIAL | {"end_of_turn": "yes"},
    DOCS_PARTIAL | {"words": [{"start": "1920"}]}, DOCS_PARTIAL | {"words": ["hi"]}]])
def test_messages_off_the_documented_shape_are_bad_responses(raw):
    with pytest.raises(ProviderBadResponse):
        parse_event(raw)


@pytest.mark.parametrize("code, reason, kind, retryable", [
    (1008, "Unauthorized Connection: Missing Authorization header", ProviderAuthError, False),
    (4001, "Not Authorized", ProviderAuthError, False),
    (1008, "Unauthorized Connection: Too many concurrent sessions", ProviderQuotaError, False),
    (1008, "Unauthorized Connection: insufficient account balance", ProviderQuotaError, False),
    (3009, "Too many concurrent sessions", ProviderQuotaError, False),
    (3005, "Session Cancelled: An error occurred", ProviderUnavailable, True),
    (3008, "Session Expired: Maximum session duration exceeded", ProviderUnavailable, True),
    (3006, "Invalid Message Type: Foo", ProviderUnavailable, False),
    (3007, "Input duration violation: 20 ms", ProviderUnavailable, False),
    (1006, "", ProviderUnavailable, True), (1000, "", ProviderUnavailable, True)])
def test_close_codes_map_to_errors(code, reason, kind, retryable):
    error = close_error(code, reason)
    assert type(error) is kind and error.retryable is retryable


# ---- pure: which turns make an utterance -----------------------------------------------

def turn(order, text, end=False, formatted=False, first_ms=None):
    return Turn(order, text, end, formatted, first_ms)


def test_one_final_per_turn_prefers_the_formatted_copy():
    tracker = TurnTracker()
    tracker.on_turn(turn(0, "hi my"))
    assert tracker.in_progress() and tracker.text() == "hi my"
    tracker.on_turn(turn(0, "hi my name", end=True))
    assert not tracker.in_progress() and not tracker.all_formatted()
    tracker.on_turn(turn(0, "Hi, my name.", end=True, formatted=True))
    tracker.on_turn(turn(0, "hi my name", end=True))  # never steps back from formatted
    assert tracker.all_formatted() and tracker.take(3000) == "Hi, my name."


def test_a_late_formatted_copy_is_not_the_next_utterance():
    tracker = TurnTracker()
    tracker.on_turn(turn(0, "hi my name", end=True, first_ms=100))
    assert tracker.take(3000) == "hi my name"  # taken before the formatted copy came
    tracker.on_turn(turn(0, "Hi, my name.", end=True, formatted=True, first_ms=100))
    tracker.on_turn(turn(1, "late words", end=True, first_ms=2000))  # earlier audio's turn
    tracker.on_turn(turn(2, "i am", first_ms=3200))
    assert tracker.text() == "i am"


def test_turns_the_server_ended_inside_an_utterance_are_joined():
    tracker = TurnTracker()
    tracker.on_turn(turn(0, "Hello.", end=True, formatted=True))
    tracker.on_turn(turn(1, "and mo"))
    assert tracker.text() == "Hello. and mo"
    tracker.on_turn(turn(1, "And more.", end=True, formatted=True))
    assert tracker.take(5000) == "Hello. And more."


@pytest.mark.parametrize("pieces_ms", [[500] * 4, [20] * 31, [2500], [1020, 10], [30], [1000]])
def test_every_audio_message_holds_50_to_1000_ms(pieces_ms):
    batcher = AudioBatcher(16000)
    sent = [m for ms in pieces_ms for m in batcher.push(bytes(ms * MS))]
    tail = batcher.flush()
    sent += [tail] if tail else []
    assert all(50 * MS <= len(m) <= 1000 * MS for m in sent)
    assert sum(map(len, sent)) >= sum(pieces_ms) * MS
    assert sum(map(len, sent)) - sum(pieces_ms) * MS < 50 * MS  # padding only at the end


# ---- the stream against the fake -------------------------------------------------------

@pytest.mark.parametrize("latency_s", [0.0, 0.1])  # latency under the timeout is fine
async def test_partials_then_one_final_per_utterance_over_one_stream(fake, latency_s):
    fake.knobs.latency_s = latency_s
    session = engine_for(fake).open("en-US")
    partials = await speak(session, 3, pause_s=0.05 + latency_s)
    assert partials and all(p in unformatted(FIRST) for p in partials)
    assert await session.finish() == FIRST
    await speak(session, 2)
    assert await session.finish() == SECOND
    assert await session.finish() == ""  # no audio since: no request, no wait
    await session.close()
    log = fake.sessions[0].wait_ended()
    assert log.path == "/v3/ws" and log.authorization == KEY  # opened as documented
    assert log.query == {"sample_rate": "16000", "encoding": "pcm_s16le",
                         "speech_model": "universal-streaming-english", "format_turns": "true"}
    assert len(fake.sessions) == 1 and log.audio_bytes == 5 * len(HALF_S)
    assert [m["type"] for m in log.control] == ["ForceEndpoint", "ForceEndpoint", "Terminate"]
    assert log.terminated and log.close_code == 1000


async def test_nothing_opens_before_audio(fake):
    session = engine_for(fake).open("en")
    assert await session.finish() == ""
    await session.close()
    assert fake.sessions == []
    with pytest.raises(ProviderError):
        await session.feed(HALF_S)  # closed for good
    assert fake.sessions == []


async def test_a_slow_formatted_copy_gives_the_unformatted_final_and_stays_out(fake):
    fake.knobs.format_delay_s = 0.6  # longer than the engine's format_wait_s
    session = engine_for(fake).open("en")
    await speak(session, 2)
    started = time.monotonic()
    assert await session.finish() == unformatted(FIRST)
    assert time.monotonic() - started < 0.6
    fake.knobs.format_delay_s = 0.0
    await asyncio.sleep(0.7)  # the first turn's formatted copy arrives now
    await speak(session, 2)
    assert await session.finish() == SECOND
    await session.close()


@pytest.mark.parametrize("options, knobs, language", [
    ({}, {"drop_formatted": True}, "en"),  # no formatted copy at all: still one final
    ({"speech_model": "u3-rt-pro"}, {}, "es"),  # formats always; takes no format_turns
    ({"format_turns": False}, {}, "en"),
])
async def test_without_a_formatted_copy_the_final_is_the_plain_one(fake, options, knobs,
                                                                   language):
    vars(fake.knobs).update(knobs)
    session = engine_for(fake, **options).open(language)
    await speak(session, 1)
    assert await session.finish() == unformatted(FIRST)
    await session.close()
    assert "format_turns" not in fake.sessions[0].query or knobs


async def test_short_frames_and_a_short_last_chunk_are_rechunked(fake):
    session = engine_for(fake).open("en")
    for _ in range(7):
        await session.feed(bytes(20 * MS))  # the edge's smallest frames
    await session.feed(HALF_S)
    await session.feed(bytes(2500 * MS))
    await session.feed(bytes(20 * MS))  # the utterance's short last chunk
    assert await session.finish() == FIRST  # the fake closes 3007 on a bad size
    await session.close()
    sizes = fake.sessions[0].wait_ended().audio_messages
    assert all(50 * MS <= size <= 1000 * MS for size in sizes)


async def test_turns_the_server_ends_itself_make_one_utterance(fake):
    fake.knobs.server_endpoint_ms = 1000
    session = engine_for(fake).open("en")
    await speak(session, 3)
    assert await session.finish() == f"{FIRST} {SECOND}"
    await session.close()


async def test_silence_ends_an_utterance_empty_and_quickly(fake):
    fake.knobs.speech = False
    session = engine_for(fake).open("en")
    await speak(session, 2)
    started = time.monotonic()
    assert await session.finish() == ""
    assert time.monotonic() - started < 0.5
    await session.close()


# ---- failures ----------------------------------------------------------------------------

async def fails(session, *, at_finish: bool = False) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await session.feed(HALF_S)
        await asyncio.sleep(0.1)
        await session.feed(HALF_S)
        if at_finish:
            await session.finish()
    return caught.value


def assert_secret_kept(error: BaseException) -> None:
    text = "".join(traceback.format_exception(error)) + repr(error)
    assert KEY not in text


async def test_a_bad_key_is_an_auth_error(fake):
    error = await fails(engine_for(fake, key="wrong-key").open("en"))
    assert type(error) is ProviderAuthError and not error.retryable
    assert fake.sessions[0].wait_ended().close_code == 1008
    assert_secret_kept(error)


@pytest.mark.parametrize("status, kind, retryable", [
    (401, ProviderAuthError, False), (403, ProviderAuthError, False),
    (429, ProviderQuotaError, False), (402, ProviderQuotaError, False),
    (500, ProviderUnavailable, True), (503, ProviderUnavailable, True),
    (400, ProviderUnavailable, False), (404, ProviderUnavailable, False),
])
async def test_a_refused_handshake_maps_its_status(fake, status, kind, retryable):
    fake.knobs.reject_status = status
    error = await fails(engine_for(fake).open("en"))
    assert type(error) is kind and error.retryable is retryable
    assert type(status_error(status)) is kind  # the pure mapping it went through
    assert_secret_kept(error)


@pytest.mark.parametrize("code, reason, kind, retryable", [
    (3005, "Session Cancelled: An error occurred", ProviderUnavailable, True),
    (3009, "Unauthorized Connection: Too many concurrent sessions", ProviderQuotaError, False),
    (1008, "Unauthorized Connection: Too many concurrent sessions", ProviderQuotaError, False),
])
async def test_a_server_close_maps_its_code(fake, code, reason, kind, retryable):
    fake.knobs.close_code, fake.knobs.close_reason = code, reason
    error = await fails(engine_for(fake).open("en"))
    assert type(error) is kind and error.retryable is retryable
    assert fake.sessions[0].wait_ended().close_code == code
    assert_secret_kept(error)


async def test_a_missing_speech_model_is_refused_like_the_real_service(fake):
    engine = engine_for(fake)
    engine.url = engine.url.replace("&speech_model=universal-streaming-english", "")
    error = await fails(engine.open("en"))
    assert type(error) is ProviderUnavailable and not error.retryable
    log = fake.sessions[0].wait_ended()
    assert log.sent[-1]["error_code"] == log.close_code == 3006


async def test_audio_under_50_ms_is_refused_like_the_real_service(fake):
    async with connect(engine_for(fake).url, additional_headers={"Authorization": KEY}) as ws:
        assert json.loads(await ws.recv())["type"] == "Begin"
        await ws.send(bytes(20 * MS))
        error = json.loads(await ws.recv())
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert error["type"] == "Error" and error["error_code"] == closed.value.rcvd.code == 3007


@pytest.mark.parametrize("knobs, kind", [
    ({"hang_at": "begin"}, ProviderTimeout),  # accepts, never says Begin
    ({"hang_at": "endpoint"}, ProviderTimeout),  # a turn that never ends
    ({"malformed": True}, ProviderBadResponse),
])
async def test_a_stream_that_fails_is_cut_in_time_and_still_terminated(fake, knobs, kind):
    vars(fake.knobs).update(knobs)
    started = time.monotonic()
    error = await fails(engine_for(fake, timeout_s=0.3).open("en"), at_finish=True)
    assert time.monotonic() - started < 0.3 + 0.5 + 0.6  # timeout + terminate wait + slack
    assert type(error) is kind and error.retryable is (kind is ProviderTimeout)
    assert fake.sessions[0].wait_ended().terminated
    assert_secret_kept(error)


async def test_a_refused_connection_is_unavailable():
    engine = AssemblyAIEngine(Secret(KEY), base_url=f"ws://127.0.0.1:{free_port()}",
                              timeout_s=1.0)
    error = await fails(engine.open("en"))
    assert type(error) is ProviderUnavailable and error.retryable
    assert_secret_kept(error)


async def test_after_a_failure_the_next_utterance_opens_a_new_stream(fake):
    fake.knobs.close_code = 3005
    session = engine_for(fake).open("en")
    await fails(session)
    fake.knobs.close_code = None
    await speak(session, 2)
    assert await session.finish() == FIRST
    await session.close()
    assert len(fake.sessions) == 2 and fake.sessions[1].wait_ended().terminated


async def test_cancelled_work_then_close_still_terminates(fake):
    fake.knobs.hang_at = "begin"
    session = engine_for(fake, timeout_s=5.0).open("en")
    feeding = asyncio.create_task(session.feed(HALF_S))
    await asyncio.sleep(0.2)
    feeding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await feeding
    await session.close()
    assert fake.sessions[0].wait_ended().terminated


async def test_a_cancelled_close_still_terminates(fake):
    session = engine_for(fake).open("en")
    await speak(session, 1)
    closing = asyncio.create_task(session.close())
    await asyncio.sleep(0)
    closing.cancel()
    log = await asyncio.to_thread(fake.sessions[0].wait_ended)  # the loop must keep running
    assert log.terminated and log.close_code == 1000


async def test_the_key_stays_out_of_reprs_and_debug_logs(fake, caplog):
    engine = engine_for(fake)
    assert KEY not in repr(engine) and KEY not in repr(engine.__dict__)
    caplog.set_level(logging.DEBUG)
    session = engine.open("en")
    await speak(session, 1)
    await session.finish()
    await session.close()
    ours = [r for r in caplog.records if not r.name.startswith("websockets.server")]
    assert not any(KEY in r.getMessage() for r in ours)  # (the fake's own server logs may)


# ---- usage -------------------------------------------------------------------------------

async def test_usage_is_open_time_per_utterance_and_the_servers_count_at_close(fake):
    session = engine_for(fake).open("en")
    with metering() as meter:
        await speak(session, 2)
        await session.finish()
        assert len(meter.records) == 1
        await asyncio.sleep(1.1)  # the fake counts whole seconds of open time
        await session.close()
    first, rest = meter.records
    assert (first.provider, first.model, first.capability) == \
        ("assemblyai", "universal-streaming-english", "stt")
    assert 0 < first.audio_seconds < 1
    assert first.audio_seconds + rest.audio_seconds == pytest.approx(1.0)

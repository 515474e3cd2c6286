"""RealtimeUpstream against the fake OpenAI Realtime server: real WebSockets, no mocks."""

from __future__ import annotations

import asyncio
import base64
import json
import logging

import pytest

from services.tools.realtime import events as ev
from services.tools.realtime.upstream import RealtimeUpstream, Recreated, SessionConfig, realtime_url
from shared.audio import tone
from shared.errors import ProviderAuthError, ProviderUnavailable
from shared.natsd import free_port
from shared.secrets import Secret
from tests.fakes.openai_realtime_server import FakeRealtime

KEY = "sk-realtime-5ecret-0123456789"
WEATHER = ev.tool_definition("get_weather", "Weather of a city", {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
SPEECH = tone(300.0, 0.5, ev.RATE_HZ)  # 500 ms of "speech" at 24 kHz


@pytest.fixture
def fake():
    with FakeRealtime(api_key=KEY) as server:
        yield server


def upstream_for(fake: FakeRealtime, key: str = KEY, tools=(WEATHER,)) -> RealtimeUpstream:
    config = SessionConfig("Be brief.", tuple(tools), language="en", voice="marin")
    return RealtimeUpstream(Secret(key), fake.base_url, config, timeout_s=2.0)


async def until(stream, predicate, timeout_s: float = 5.0) -> list:
    """Events from `stream` up to and including the first that satisfies `predicate`."""
    seen = []
    async with asyncio.timeout(timeout_s):
        async for event in stream:
            seen.append(event)
            if predicate(event):
                return seen
    raise AssertionError(f"stream ended before the expected event; saw {seen}")


async def eventually(condition, timeout_s: float = 5.0) -> None:
    """The fake records in its own thread: wait for it to have seen what was sent."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def done(event) -> bool:
    return isinstance(event, ev.ResponseDone)


async def turn(upstream: RealtimeUpstream, stream) -> list:
    await upstream.append_audio(SPEECH)
    await upstream.commit_and_respond()
    return await until(stream, done)


def test_the_url_follows_openai_base_url():
    assert realtime_url("https://api.openai.com/v1", "gpt-realtime") == \
        "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert realtime_url("http://127.0.0.1:9/v1/", "m") == "ws://127.0.0.1:9/v1/realtime?model=m"
    with pytest.raises(ValueError):
        realtime_url("ftp://host/v1", "m")


async def test_session_update_carries_tools_instructions_and_formats(fake):
    upstream = upstream_for(fake)
    await upstream.start()
    stream = upstream.events()
    await until(stream, lambda e: isinstance(e, ev.SessionUpdated))
    await upstream.close()
    (update,) = fake.connections[0].of_type("session.update")
    session = update["session"]
    assert session["type"] == "realtime" and session["instructions"] == "Be brief."
    assert session["tools"] == [{"type": "function", "name": "get_weather",
                                 "description": "Weather of a city",
                                 "parameters": WEATHER["parameters"]}]
    assert session["audio"]["input"]["turn_detection"] is None
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"] == {"format": {"type": "audio/pcm", "rate": 24000},
                                          "voice": "marin"}
    assert fake.connections[0].model == "gpt-realtime"


async def test_audio_round_trip(fake):
    fake.knobs.reply, fake.knobs.reply_audio_s = "Sunny and warm today.", 0.5
    upstream = upstream_for(fake, tools=())
    await upstream.start()
    stream = upstream.events()
    seen = await turn(upstream, stream)
    await upstream.close()
    sent = b"".join(base64.b64decode(e["audio"])
                    for e in fake.connections[0].of_type("input_audio_buffer.append"))
    assert sent == SPEECH
    assert [e.text for e in seen if isinstance(e, ev.UserTranscript)] == \
        ["What is the weather in Paris?"]
    audio = b"".join(e.pcm_24k for e in seen if isinstance(e, ev.AudioOut))
    assert len(audio) == int(0.5 * ev.RATE_HZ) * 2
    assert "".join(e.text for e in seen if isinstance(e, ev.AssistantDelta)) == "Sunny and warm today."
    assert [e.text for e in seen if isinstance(e, ev.AssistantDone)] == ["Sunny and warm today."]
    assert seen[-1].status == "completed"


async def test_a_function_call_and_its_output(fake):
    fake.knobs.tool, fake.knobs.tool_args = "get_weather", {"city": "Paris"}
    upstream = upstream_for(fake)
    await upstream.start()
    stream = upstream.events()
    seen = await turn(upstream, stream)
    (call,) = [e for e in seen if isinstance(e, ev.FunctionCall)]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    await upstream.tool_output(call.call_id, json.dumps({"temp_c": 21}))
    await upstream.respond()
    seen = await until(stream, done)
    await upstream.close()
    assert [e.text for e in seen if isinstance(e, ev.AssistantDone)] == ['The answer is {"temp_c": 21}']


async def test_cancel_stops_the_reply(fake):
    fake.knobs.reply_audio_s, fake.knobs.audio_delay_s = 3.0, 0.05
    upstream = upstream_for(fake, tools=())
    await upstream.start()
    stream = upstream.events()
    await upstream.append_audio(SPEECH)
    await upstream.commit_and_respond()
    first = await until(stream, lambda e: isinstance(e, ev.AudioOut))
    await upstream.cancel()
    seen = await until(stream, done)
    await upstream.close()
    assert seen[-1].status == "cancelled" and seen[-1].response_id == first[-1].response_id
    heard = sum(len(e.pcm_24k) for e in first + seen if isinstance(e, ev.AudioOut))
    assert heard < int(3.0 * ev.RATE_HZ) * 2 / 2


async def test_an_expired_session_is_recreated_with_its_history(fake):
    fake.knobs.tool, fake.knobs.tool_args = "get_weather", {"city": "Paris"}
    upstream = upstream_for(fake)
    await upstream.start()
    stream = upstream.events()
    (call,) = [e for e in await turn(upstream, stream) if isinstance(e, ev.FunctionCall)]
    await upstream.tool_output(call.call_id, '"21 C"')
    await upstream.respond()
    await until(stream, done)
    fake.expire(1)
    recreated = await until(stream, lambda e: isinstance(e, Recreated))
    assert recreated[-1].reason == "expired"
    second = fake.connections[1]
    await eventually(lambda: len(second.of_type("conversation.item.create")) == 4)
    replayed = [e["item"] for e in second.of_type("conversation.item.create")]
    assert second.received[0]["type"] == "session.update"
    assert replayed == [
        ev.user_text_item("What is the weather in Paris?"),
        ev.function_call_item(call.call_id, "get_weather", '{"city": "Paris"}'),
        ev.function_output_item(call.call_id, '"21 C"'),
        ev.assistant_text_item('The answer is "21 C"'),
    ]
    fake.knobs.tool = None
    seen = await turn(upstream, stream)  # the next turn works on the new session
    await upstream.close()
    assert seen[-1].status == "completed" and len(fake.connections) == 2
    assert second.of_type("input_audio_buffer.commit")


async def test_a_dropped_socket_reconnects_and_asks_again_for_the_lost_reply(fake):
    fake.knobs.drop_after_events = 10  # … 7 response.created, 8 item added, 9 text, 10 audio
    upstream = upstream_for(fake, tools=())
    await upstream.start()
    stream = upstream.events()
    await upstream.append_audio(SPEECH)
    await upstream.commit_and_respond()
    seen = await until(stream, lambda e: isinstance(e, Recreated))
    lost = next(e.response_id for e in seen if isinstance(e, ev.ResponseStarted))
    assert seen[-1] == Recreated("dropped", lost)
    seen = await until(stream, done)
    await upstream.close()
    assert seen[-1].status == "completed" and seen[-1].response_id != lost
    second = fake.connections[1]
    assert [e["type"] for e in second.received] == [
        "session.update", "conversation.item.create", "response.create"]
    assert second.received[1]["item"] == ev.user_text_item("What is the weather in Paris?")


async def test_audio_sent_while_the_session_is_down_is_not_lost(fake):
    fake.knobs.drop_after_events = 2  # session.created, session.updated, then the socket dies
    upstream = upstream_for(fake, tools=())
    await upstream.start()
    stream = upstream.events()
    await until(stream, lambda e: isinstance(e, Recreated))
    await upstream.append_audio(SPEECH)
    await upstream.commit_and_respond()
    seen = await until(stream, done)
    await upstream.close()
    assert seen[-1].status == "completed"
    assert fake.connections[1].of_type("input_audio_buffer.commit")


async def test_a_bad_key_is_a_clear_auth_error_that_does_not_show_the_key(fake, caplog):
    caplog.set_level(logging.DEBUG)
    upstream = upstream_for(fake, key="sk-wrong-5ecret")
    with pytest.raises(ProviderAuthError) as raised:
        await upstream.start()
    assert "401" in str(raised.value) and not raised.value.retryable
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("fake.")]
    assert "5ecret" not in str(raised.value) and not any("5ecret" in m for m in ours)
    assert fake.connections == []


async def test_nothing_listening_is_unavailable():
    config = SessionConfig("x")
    upstream = RealtimeUpstream(Secret(KEY), f"http://127.0.0.1:{free_port()}/v1", config,
                                timeout_s=2.0)
    with pytest.raises(ProviderUnavailable):
        await upstream.start()

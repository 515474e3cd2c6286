"""OpenAIChatLlm against the fake OpenAI server: streamed text, tool calls, every failure."""

from __future__ import annotations

import time

import httpx
import pytest

from services.tools.llm.openai_chat_stream import OpenAIChatLlm
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
from shared.natsd import free_port
from shared.secrets import Secret
from shared.usage import Usage, metering
from tests.fakes.openai_server import FakeOpenAI

KEY = "sk-test-5ecret-llm-key-0123456789"
TIMEOUT_S = 0.5
HELLO = [user_message("hello")]
TOOLS = [{"name": "get_weather", "description": "Current weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"]}}]


@pytest.fixture
def server():
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def llm(server):
    provider = OpenAIChatLlm(Secret(KEY), base_url=server.url, timeout_s=TIMEOUT_S)
    yield provider
    await provider.close()


async def turn(llm, messages=HELLO, tools=(), instructions=None) -> list:
    return [e async for e in llm.stream(list(messages), list(tools), instructions=instructions)]


def text_of(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


# ---- what comes out ---------------------------------------------------------------------


async def test_text_streams_as_deltas_and_ends_the_turn(server, llm):
    server.knobs.set(reply_text="Hello there. How can I help you today?")
    events = await turn(llm)
    assert len([e for e in events if isinstance(e, TextDelta)]) > 1  # word by word
    assert text_of(events) == "Hello there. How can I help you today?"
    assert events[-1] == TurnEnd("stop")


async def test_tool_calls_come_whole_and_in_order(server, llm):
    server.knobs.set(tool_calls=({"name": "get_weather", "arguments": {"city": "Paris"}},
                                 {"name": "get_time", "arguments": {"tz": "Europe/Paris"}}))
    events = await turn(llm, tools=TOOLS)
    assert events == [ToolCallRequest("call_fake0", "get_weather", '{"city": "Paris"}'),
                      ToolCallRequest("call_fake1", "get_time", '{"tz": "Europe/Paris"}'),
                      TurnEnd("tool_calls")]


async def test_usage_is_recorded_by_the_time_the_turn_ends(server, llm):
    server.knobs.set(reply_text="Hi.", usage_tokens=(42, 5))
    with metering() as meter:
        async for event in llm.stream(HELLO, [], instructions=None):
            if isinstance(event, TurnEnd):
                assert meter.records == [Usage(provider="openai", model="gpt-4.1-nano",
                                               capability="llm", input_tokens=42,
                                               output_tokens=5)]
    assert len(meter.records) == 1


async def test_request_shape_is_the_documented_one(server, llm):
    history = [user_message("weather?"),
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": '{"output": "rain"}'}]
    await turn(llm, history, TOOLS, instructions="You are a voice assistant.")
    (request,) = server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    body = request.json
    assert body["model"] == "gpt-4.1-nano"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["tool_choice"] == "auto"
    assert body["tools"] == [{"type": "function", "function": TOOLS[0]}]
    assert body["messages"] == [{"role": "system", "content": "You are a voice assistant."},
                                *history]


async def test_without_tools_none_are_sent(server, llm):
    await turn(llm)
    assert "tools" not in server.requests[0].json
    assert "tool_choice" not in server.requests[0].json


async def test_any_compatible_base_url_and_model(server):
    provider = OpenAIChatLlm(Secret(KEY), base_url=server.url + "/", model="llama-3.1-8b",
                             name="gateway", timeout_s=TIMEOUT_S)
    server.knobs.set(reply_text="ok")
    with metering() as meter:
        assert text_of(await turn(provider)) == "ok"
    await provider.close()
    assert server.requests[0].json["model"] == "llama-3.1-8b"
    assert meter.records[0].model == "llama-3.1-8b"


async def test_a_consumer_that_stops_early_leaves_the_adapter_usable(server, llm):
    server.knobs.set(reply_text="one two three four five six")
    async for event in llm.stream(HELLO, [], instructions=None):
        assert isinstance(event, TextDelta)
        break
    assert text_of(await turn(llm)) == "one two three four five six"


async def test_a_long_reply_that_keeps_flowing_is_not_cut(server, llm):
    server.knobs.set(reply_text="a b c d e f", chunk_delay_s=0.2)  # ~1.6 s in all
    started = time.monotonic()
    assert text_of(await turn(llm)) == "a b c d e f"
    assert time.monotonic() - started > TIMEOUT_S  # longer than the timeout, as a whole


# ---- failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("status, code, kind", [
    (401, None, ProviderAuthError), (403, None, ProviderAuthError),
    (429, "insufficient_quota", ProviderQuotaError),
    (429, "rate_limit_exceeded", ProviderQuotaError),
    (500, None, ProviderUnavailable), (503, None, ProviderUnavailable),
    (400, None, ProviderError), (404, None, ProviderError),
])  # fmt: skip
async def test_each_status_is_mapped_and_tried_once(server, llm, status, code, kind):
    server.knobs.set(status=status, error_code=code)
    with pytest.raises(kind) as caught:
        await turn(llm)
    assert type(caught.value) is kind
    assert caught.value.retryable is (status >= 500)
    if code:
        assert code in str(caught.value)
    assert len(server.requests) == 1  # no retry here: retries have one owner


async def test_a_wrong_key_is_an_auth_error_that_never_shows_the_key(server):
    wrong = "sk-wrong-but-still-secret-987"
    provider = OpenAIChatLlm(Secret(wrong), base_url=server.url, timeout_s=TIMEOUT_S)
    with pytest.raises(ProviderAuthError) as caught:
        await turn(provider)
    await provider.close()
    texts = [str(caught.value), repr(caught.value), str(caught.value.__cause__), repr(provider)]
    assert not any(wrong in text for text in texts)
    assert wrong in server.requests[0].headers["authorization"]  # the fake did get it


async def test_a_hang_is_cut_at_the_timeout(server, llm):
    server.knobs.set(hang=True)
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as caught:
        await turn(llm)
    assert TIMEOUT_S * 0.8 <= time.monotonic() - started < 2.0
    assert caught.value.retryable and len(server.requests) == 1


async def test_the_first_event_is_bounded_as_a_whole(server, llm):
    # Every wait alone is below the timeout, but the first words come after 0.6 s.
    server.knobs.set(latency_s=0.3, chunk_delay_s=0.3, reply_text="late words")
    with pytest.raises(ProviderTimeout):
        await turn(llm)


async def test_latency_below_the_timeout_is_fine(server, llm):
    server.knobs.set(latency_s=0.2, reply_text="Hola")
    assert text_of(await turn(llm)) == "Hola"


async def test_a_stall_mid_stream_is_a_timeout_after_the_first_words(server, llm):
    server.knobs.set(reply_text="one two three four five six seven eight nine ten",
                     stall_after_bytes=700)
    events, started = [], time.monotonic()
    with pytest.raises(ProviderTimeout) as caught:
        async for event in llm.stream(HELLO, [], instructions=None):
            events.append(event)
    assert events and all(isinstance(e, TextDelta) for e in events)  # output had started
    assert text_of(events) != "one two three four five six seven eight nine ten"
    assert TIMEOUT_S * 0.8 <= time.monotonic() - started < 2.0
    assert caught.value.retryable


async def test_a_cut_connection_is_unavailable(server, llm):
    server.knobs.set(reply_text="one two three four five six seven", cut_after_bytes=600)
    events = []
    with pytest.raises(ProviderUnavailable) as caught:
        async for event in llm.stream(HELLO, [], instructions=None):
            events.append(event)
    assert events and not any(isinstance(e, TurnEnd) for e in events)
    assert caught.value.retryable


async def test_a_cut_before_any_body_is_unavailable(server, llm):
    server.knobs.set(cut_after_bytes=0)
    with pytest.raises(ProviderUnavailable):
        await turn(llm)


async def test_a_malformed_stream_is_a_bad_response(server, llm):
    server.knobs.set(malformed=True)
    with pytest.raises(ProviderBadResponse) as caught:
        await turn(llm)
    assert not caught.value.retryable


async def test_a_refused_connection_is_unavailable():
    provider = OpenAIChatLlm(Secret(KEY), base_url=f"http://127.0.0.1:{free_port()}/v1",
                             timeout_s=TIMEOUT_S)
    with pytest.raises(ProviderUnavailable) as caught:
        await turn(provider)
    await provider.close()
    assert caught.value.retryable and KEY not in str(caught.value)


async def test_failures_are_reported_without_usage(server, llm):
    server.knobs.set(status=500)
    with metering() as meter, pytest.raises(ProviderUnavailable):
        await turn(llm)
    assert meter.records == []


async def test_closes_only_a_client_it_owns(server):
    shared_client = httpx.AsyncClient()
    provider = OpenAIChatLlm(Secret(KEY), base_url=server.url, http=shared_client)
    assert text_of(await turn(provider)) == "hello"  # the fake echoes by default
    assert text_of(await turn(provider)) == "hello"  # the pooled connection again
    await provider.close()
    assert not shared_client.is_closed
    await shared_client.aclose()
    assert KEY not in repr(provider)


def test_settings_are_validated():
    with pytest.raises(ValueError):
        OpenAIChatLlm(Secret(KEY), timeout_s=0)


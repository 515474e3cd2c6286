"""OpenAIChatTranslator against the fake OpenAI server, and its pure mapping functions."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from services.translate.providers.openai_chat import (
    OpenAIChatTranslator,
    chat_request,
    openai_error,
    parse_chat_completion,
    strip_quotes,
)
from shared.errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderQuotaError,
    ProviderTimeout,
    ProviderUnavailable,
)
from shared.http_errors import status_error
from shared.languages import ANY, supports_pair
from shared.natsd import free_port
from shared.secrets import Secret
from shared.usage import Usage, metering
from tests.fakes.openai_server import FakeOpenAI, error_body

KEY = "sk-test-5ecret-key-0123456789"

# A chat completion as the API reference shows it.
DOCS_COMPLETION = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4.1-nano-2025-04-14",
    "choices": [{
        "index": 0,
        "message": {"role": "assistant", "content": "Hola, ¿cómo estás?", "refusal": None,
                    "annotations": []},
        "logprobs": None,
        "finish_reason": "stop",
    }],
    "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
              "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}},
    "service_tier": "default",
}  # fmt: skip


@pytest.fixture
def server():
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def translator(server):
    engine = OpenAIChatTranslator(Secret(KEY), base_url=server.url, timeout_s=0.5)
    yield engine
    await engine.close()


# ---- pure functions ---------------------------------------------------------------------


def test_parse_reads_content_and_usage():
    reply = parse_chat_completion(DOCS_COMPLETION)
    assert (reply.text, reply.input_tokens, reply.output_tokens) == ("Hola, ¿cómo estás?", 19, 10)


@pytest.mark.parametrize("payload", [
    {}, {"choices": []}, {"choices": [{"index": 0}]}, [], None, "text",
    {"choices": [{"message": {"role": "assistant", "content": None, "refusal": "I can't."}}]},
])  # fmt: skip
def test_parse_rejects_shapes_without_text(payload):
    with pytest.raises(ProviderBadResponse):
        parse_chat_completion(payload)


def test_request_is_deterministic_and_names_both_languages():
    body = chat_request("gpt-4.1-nano", "Hello", "en", "es")
    assert body["model"] == "gpt-4.1-nano" and body["temperature"] == 0
    system, user = body["messages"]
    assert system["role"] == "system"
    assert "'en'" in system["content"] and "'es'" in system["content"]
    assert "only" in system["content"] and "empty" in system["content"]
    assert user == {"role": "user", "content": "Hello"}


@pytest.mark.parametrize("status, code, kind, retryable", [
    (401, "invalid_api_key", ProviderAuthError, False),
    (403, "unsupported_country_region_territory", ProviderAuthError, False),
    (429, "insufficient_quota", ProviderQuotaError, False),
    (429, "rate_limit_exceeded", ProviderQuotaError, False),
    (500, None, ProviderUnavailable, True),
    (503, None, ProviderUnavailable, True),
    (400, None, ProviderError, False),
])  # fmt: skip
def test_error_statuses_map_to_the_vocabulary(status, code, kind, retryable):
    error = openai_error(status, json.dumps(error_body(status, code, KEY)).encode(), Secret(KEY))
    assert type(error) is kind and error.retryable is retryable
    assert KEY not in str(error)
    if code:
        assert code in str(error)


def test_error_mapping_survives_a_body_that_is_not_json():
    assert isinstance(openai_error(502, b"<html>Bad gateway</html>"), ProviderUnavailable)
    assert isinstance(status_error("x", 408), ProviderTimeout)


@pytest.mark.parametrize("reply, original, expected", [
    ('"Hola"', "Hello", "Hola"), ("«Bonjour»", "Hello", "Bonjour"),
    ('"Hola"', '"Hello"', '"Hola"'), (" Hola ", "Hello", "Hola"), ('"', "x", '"'),
])  # fmt: skip
def test_strip_quotes_only_when_the_model_added_them(reply, original, expected):
    assert strip_quotes(reply, original) == expected


# ---- against the fake -------------------------------------------------------------------


async def test_translates_and_records_usage(server, translator):
    server.knobs.set(reply_text="Hola, mundo.", usage_tokens=(42, 5))
    with metering() as meter:
        assert await translator.translate("Hello, world.", "en", "es") == "Hola, mundo."
    assert meter.records == [Usage(provider="openai", model="gpt-4.1-nano",
                                   capability="translate", input_tokens=42, output_tokens=5)]


async def test_request_shape_is_the_documented_one(server, translator):
    await translator.translate("Good morning", "en-US", "de")
    (request,) = server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.json == chat_request("gpt-4.1-nano", "Good morning", "en-US", "de")
    assert "stream" not in request.json


async def test_accepts_any_pair_and_skips_empty_text(server, translator):
    assert translator.pairs() == frozenset({(ANY, ANY)})
    assert supports_pair(translator.pairs(), "gl", "ja")
    assert await translator.translate("  \n", "en", "es") == ""
    assert server.requests == []
    await translator.warm_up()


@pytest.mark.parametrize("status, code, kind", [
    (401, None, ProviderAuthError), (403, None, ProviderAuthError),
    (429, "insufficient_quota", ProviderQuotaError),
    (429, "rate_limit_exceeded", ProviderQuotaError),
    (500, None, ProviderUnavailable), (503, None, ProviderUnavailable),
])  # fmt: skip
async def test_each_failure_is_mapped_and_tried_once(server, translator, status, code, kind):
    server.knobs.set(status=status, error_code=code)
    with pytest.raises(kind) as caught:
        await translator.translate("Hello", "en", "es")
    assert caught.value.retryable is (status >= 500)
    assert len(server.requests) == 1  # no retry here: retries have one owner


async def test_a_wrong_key_is_an_auth_error_that_never_shows_the_key(server):
    wrong = "sk-wrong-but-still-secret-987"
    engine = OpenAIChatTranslator(Secret(wrong), base_url=server.url, timeout_s=0.5)
    with pytest.raises(ProviderAuthError) as caught:
        await engine.translate("Hello", "en", "es")
    await engine.close()
    texts = [str(caught.value), repr(caught.value), str(caught.value.__cause__), repr(engine)]
    assert not any(wrong in text for text in texts)
    assert wrong in server.requests[0].headers["authorization"]  # the fake did get it


async def test_a_hang_is_cut_at_the_timeout(server, translator):
    server.knobs.set(hang=True)
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as caught:
        await translator.translate("Hello", "en", "es")
    assert 0.4 <= time.monotonic() - started < 2.0
    assert caught.value.retryable and len(server.requests) == 1


async def test_latency_below_the_timeout_is_fine(server, translator):
    server.knobs.set(latency_s=0.2, reply_text="Hola")
    assert await translator.translate("Hello", "en", "es") == "Hola"


async def test_malformed_json_is_a_bad_response(server, translator):
    server.knobs.set(malformed=True)
    with pytest.raises(ProviderBadResponse) as caught:
        await translator.translate("Hello", "en", "es")
    assert not caught.value.retryable


async def test_a_refused_connection_is_unavailable():
    engine = OpenAIChatTranslator(Secret(KEY), base_url=f"http://127.0.0.1:{free_port()}/v1",
                                  timeout_s=0.5)
    with pytest.raises(ProviderUnavailable) as caught:
        await engine.translate("Hello", "en", "es")
    await engine.close()
    assert caught.value.retryable and KEY not in str(caught.value)


async def test_closes_only_a_client_it_owns(server):
    shared_client = httpx.AsyncClient()
    engine = OpenAIChatTranslator(Secret(KEY), base_url=server.url, http=shared_client)
    assert await engine.translate("Hi", "en", "fr") == "Hi"  # the fake echoes by default
    await engine.close()
    assert not shared_client.is_closed
    await shared_client.aclose()
    assert KEY not in repr(engine)


# ---- the fake's streaming chat, for the assistant's LLM adapter -----------------------


async def _sse_events(server, body: dict) -> list[dict]:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{server.url}/chat/completions", json=body,
                                     headers={"Authorization": f"Bearer {KEY}"})
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


async def test_fake_streams_content_deltas_and_usage(server):
    server.knobs.set(reply_text="Hello there, friend.", usage_tokens=(7, 4))
    events = await _sse_events(server, {"model": "gpt-4.1-nano", "stream": True,
                                        "stream_options": {"include_usage": True},
                                        "messages": [{"role": "user", "content": "hi"}]})
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    assert deltas[0]["role"] == "assistant"
    assert "".join(d.get("content") or "" for d in deltas) == "Hello there, friend."
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["total_tokens"] == 11


async def test_fake_streams_tool_calls_in_pieces(server):
    calls = ({"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}},
             {"name": "get_time", "arguments": {}})
    server.knobs.set(tool_calls=calls)
    events = await _sse_events(server, {"model": "gpt-4.1-nano", "stream": True,
                                        "messages": [{"role": "user", "content": "hi"}],
                                        "tools": [{"type": "function", "function": {"name": "x"}}]})
    assembled: dict[int, dict] = {}
    for event in events:
        for call in event["choices"][0]["delta"].get("tool_calls", []):
            entry = assembled.setdefault(call["index"], {"name": "", "arguments": ""})
            entry["name"] += call.get("function", {}).get("name", "")
            entry["arguments"] += call["function"].get("arguments", "")
    assert [(c["name"], json.loads(c["arguments"])) for c in assembled.values()] == [
        ("get_weather", {"city": "Paris", "unit": "c"}), ("get_time", {})]
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert "usage" not in events[-1]

"""Streamed chat completions → LLM events: the pure pieces of the OpenAI LLM adapter.

Payloads are shaped like the API reference's `chat.completion.chunk`s; every table is
also fed cut into pieces of every size, as a network may deliver it.
"""

from __future__ import annotations

import json

import pytest

from services.tools.llm.openai_chat_stream import (
    ChatStreamParser,
    SseDecoder,
    chat_stream_request,
    openai_tool,
    stream_error,
)
from services.tools.llm.provider import (
    TextDelta,
    ToolCallRequest,
    TurnEnd,
    assistant_message,
    parse_arguments,
    tool_result_message,
)
from shared.errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderQuotaError,
    ProviderUnavailable,
)

HEAD = {"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
        "model": "gpt-4.1-nano-2025-04-14", "system_fingerprint": "fp_44709d6fcb"}


def chunk(delta: dict | None = None, finish: str | None = None, **extra) -> dict:
    choice = {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
    return {**HEAD, "choices": [choice], **extra}


def usage_chunk(prompt: int, completion: int) -> dict:
    return {**HEAD, "choices": [], "usage": {"prompt_tokens": prompt,
                                             "completion_tokens": completion,
                                             "total_tokens": prompt + completion}}


def call_start(index: int, call_id: str, name: str) -> dict:
    return chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                  "function": {"name": name, "arguments": ""}}]})


def call_piece(index: int, arguments: str) -> dict:
    return chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})


def sse(*events: dict | str, end: bytes = b"\n\n") -> bytes:
    lines = [b"data: " + (e if isinstance(e, str) else json.dumps(e)).encode() for e in events]
    return b"".join(line + end for line in lines)


def parse(body: bytes, piece: int | None = None) -> tuple[list, ChatStreamParser]:
    parser, events = ChatStreamParser(), []
    size = piece or len(body) or 1
    for at in range(0, len(body), size):
        events += parser.feed(body[at:at + size])
    return events + (parser.end() if not parser.done else []), parser


TEXT_TURN = sse(chunk({"role": "assistant", "content": ""}), chunk({"content": "Hello"}),
                chunk({"content": " there, "}), chunk({"content": "naïve 🙂 friend."}),
                chunk(finish="stop"), usage_chunk(12, 5), "[DONE]")
TWO_CALLS = sse(chunk({"role": "assistant", "content": None}),
                call_start(0, "call_a", "get_weather"), call_piece(0, '{"city": '),
                call_piece(0, '"Paris"}'), call_start(1, "call_b", "get_time"),
                call_piece(1, "{}"), chunk(finish="tool_calls"), usage_chunk(30, 9), "[DONE]")

TABLE = [
    ("text", TEXT_TURN,
     [TextDelta("Hello"), TextDelta(" there, "), TextDelta("naïve 🙂 friend."), TurnEnd("stop")]),
    ("two tool calls", TWO_CALLS,
     [ToolCallRequest("call_a", "get_weather", '{"city": "Paris"}'),
      ToolCallRequest("call_b", "get_time", "{}"), TurnEnd("tool_calls")]),
    ("text then a call", sse(chunk({"content": "Let me check."}), call_start(0, "c1", "look"),
                             call_piece(0, '{"q":1}'), chunk(finish="tool_calls"), "[DONE]"),
     [TextDelta("Let me check."), ToolCallRequest("c1", "look", '{"q":1}'),
      TurnEnd("tool_calls")]),
    ("crlf lines, comments, other fields",
     b": keep-alive\r\n\r\nevent: message\r\nid: 7\r\nretry: 100\r\n"
     + sse(chunk({"content": "Hi"}), chunk(finish="stop"), "[DONE]", end=b"\r\n\r\n"),
     [TextDelta("Hi"), TurnEnd("stop")]),
    ("no space after data:", b'data:{"choices":[{"delta":{"content":"x"}}]}\n\ndata:[DONE]\n\n',
     [TextDelta("x"), TurnEnd("stop")]),
    ("length cut", sse(chunk({"content": "and so"}), chunk(finish="length"), "[DONE]"),
     [TextDelta("and so"), TurnEnd("length")]),
    ("a refusal is said", sse(chunk({"content": None, "refusal": "I can't help."}),
                              chunk(finish="stop"), "[DONE]"),
     [TextDelta("I can't help."), TurnEnd("stop")]),
    ("[DONE] without finish_reason", sse(call_start(0, "c", "f"), call_piece(0, '{"a":2}'),
                                         "[DONE]"),
     [ToolCallRequest("c", "f", '{"a":2}'), TurnEnd("tool_calls")]),
    ("finish_reason without [DONE]", sse(chunk({"content": "ok"}), chunk(finish="stop")),
     [TextDelta("ok"), TurnEnd("stop")]),
    ("last event without its blank line", sse(chunk({"content": "ok"}))[:-2]
     + b"\n\ndata: [DONE]", [TextDelta("ok"), TurnEnd("stop")]),
    ("empty reply", sse(chunk({"role": "assistant", "content": ""}), chunk(finish="stop"),
                        "[DONE]"), [TurnEnd("stop")]),
    ("nothing after [DONE] counts", sse(chunk(finish="stop"), "[DONE]", chunk({"content": "x"})),
     [TurnEnd("stop")]),
    ("unknown fields and n>1 choices ignored",
     sse({**HEAD, "choices": [{"index": 0, "delta": {"content": "a", "audio": {}}},
                              {"index": 1, "delta": {"content": "b"}}], "extra": 1,
          "error": None},
         {**HEAD, "choices": []}, chunk(finish="stop"), "[DONE]"),
     [TextDelta("a"), TurnEnd("stop")]),
]  # fmt: skip


@pytest.mark.parametrize("piece", [None, 1, 2, 7, 64])
@pytest.mark.parametrize("name, body, expected", TABLE, ids=[row[0] for row in TABLE])
def test_stream_tables(name, body, expected, piece):
    events, parser = parse(body, piece)
    assert events == expected
    assert parser.done


def test_usage_comes_from_the_final_usage_chunk():
    _, parser = parse(TWO_CALLS, 5)
    assert parser.usage == (30, 9)
    _, parser = parse(sse(chunk({"content": "x"}), chunk(finish="stop"), "[DONE]"))
    assert parser.usage is None  # a server that ignores include_usage
    _, parser = parse(sse(chunk(finish="stop", usage={"prompt_tokens": -1}), "[DONE]"))
    assert parser.usage == (0, 0)  # nonsense counts as nothing


def test_tool_calls_are_announced_only_once_complete():
    parser = ChatStreamParser()
    assert parser.feed(sse(call_start(0, "c0", "a"), call_piece(0, '{"x":'))) == []
    assert parser.feed(sse(call_start(1, "c1", "b"), call_piece(0, "1}"))) == []
    assert parser.feed(sse(chunk(finish="tool_calls"))) == [
        ToolCallRequest("c0", "a", '{"x":1}'), ToolCallRequest("c1", "b", "{}")]
    assert parser.feed(sse("[DONE]")) == [TurnEnd("tool_calls")]


@pytest.mark.parametrize("fragments, expected", [
    # Some compatible servers repeat the id and name in every fragment.
    ([{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{\"a\""}},
      {"index": 0, "id": "c", "function": {"name": "f", "arguments": ":1}"}}],
     [ToolCallRequest("c", "f", '{"a":1}')]),
    # ... or leave out the index: a new id starts a new call.
    ([{"id": "c1", "function": {"name": "f", "arguments": "{}"}},
      {"id": "c2", "function": {"name": "g", "arguments": "{\"b\""}},
      {"function": {"arguments": ":2}"}}],
     [ToolCallRequest("c1", "f", "{}"), ToolCallRequest("c2", "g", '{"b":2}')]),
    # ... or give no id at all, or no arguments.
    ([{"index": 0, "function": {"name": "f"}}], [ToolCallRequest("call_0", "f", "{}")]),
    # Indices need not start at 0; order is by index, not arrival.
    ([{"index": 3, "id": "late", "function": {"name": "b", "arguments": "{}"}},
      {"index": 2, "id": "early", "function": {"name": "a", "arguments": "{}"}}],
     [ToolCallRequest("early", "a", "{}"), ToolCallRequest("late", "b", "{}")]),
])  # fmt: skip
def test_tool_call_fragments_are_assembled(fragments, expected):
    body = sse(*[chunk({"tool_calls": [f]}) for f in fragments], chunk(finish="tool_calls"),
               "[DONE]")
    events, _ = parse(body, 3)
    assert events == [*expected, TurnEnd("tool_calls")]


@pytest.mark.parametrize("body, error", [
    (b'data: {"id": "chatcmpl-fake", "choices": [\n\n', ProviderBadResponse),
    (b"data: not json\n\n", ProviderBadResponse),
    (b"data: [1, 2]\n\n", ProviderBadResponse),
    (sse(chunk({"tool_calls": ["nope"]})), ProviderBadResponse),
    (sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
         chunk(finish="tool_calls")), ProviderBadResponse),  # a call without a name
    (b'{"id": "chatcmpl-fake", "choices": []}', ProviderBadResponse),  # JSON, not SSE
    (b"", ProviderBadResponse),
    (sse(chunk({"content": "Hel"})), ProviderUnavailable),  # cut before the end
    (sse({"error": {"message": "overloaded", "type": "server_error"}}), ProviderUnavailable),
    (sse({"error": {"type": "requests", "code": "rate_limit_exceeded"}}), ProviderQuotaError),
])  # fmt: skip
def test_malformed_and_truncated_streams(body, error):
    with pytest.raises(error):
        parse(body)


def test_stream_errors_name_only_known_codes():
    assert isinstance(stream_error({"code": "invalid_api_key", "message": "sk-123"}),
                      ProviderAuthError)
    error = stream_error({"code": "weird sk-secret", "message": "sk-secret"})
    assert isinstance(error, ProviderUnavailable) and "sk-secret" not in str(error)
    assert isinstance(stream_error("not an object"), ProviderUnavailable)


@pytest.mark.parametrize("body, payloads", [
    (b"data: a\n\n", ["a"]),
    (b"data: a\ndata: b\n\n", ["a\nb"]),  # several data lines make one event
    (b"data\n\n", [""]),  # a field name alone
    (b": comment\n\nid: 1\n\n", []),
    (b"data: caf\xc3", []),  # a split UTF-8 character waits for its second byte
])  # fmt: skip
def test_sse_decoder(body, payloads):
    assert SseDecoder().feed(body) == payloads


def test_sse_decoder_joins_a_character_split_between_reads():
    decoder = SseDecoder()
    assert decoder.feed(b"data: caf\xc3") == []
    assert decoder.feed(b"\xa9\n\n") == ["café"]
    assert decoder.feed(b"data: tail") == []
    assert decoder.close() == ["tail"]


def test_request_shape():
    tools = [{"name": "get_weather", "description": "Weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}},
        {"name": "ping"}]
    messages = [{"role": "user", "content": "hi"}]
    body = chat_stream_request("gpt-4.1-nano", messages, tools, "Be brief.")
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, *messages]
    assert body["tool_choice"] == "auto"
    assert body["tools"][0] == {"type": "function", "function": tools[0]}
    assert body["tools"][1]["function"]["parameters"] == {"type": "object", "properties": {}}
    bare = chat_stream_request("m", messages, [], None)
    assert "tools" not in bare and "tool_choice" not in bare  # the API rejects tools: []
    assert bare["messages"] == messages
    wrapped = {"type": "function", "function": {"name": "x", "parameters": {}}}
    assert openai_tool(wrapped) is wrapped


def test_message_helpers():
    call = ToolCallRequest("call_1", "get_time", '{"tz": "UTC"}')
    assert assistant_message("", [call]) == {
        "role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_time", "arguments": '{"tz": "UTC"}'}}]}
    assert assistant_message("Hi.") == {"role": "assistant", "content": "Hi."}
    assert assistant_message("") == {"role": "assistant", "content": ""}
    result = tool_result_message("call_1", {"time": "12:00"})
    assert result["role"] == "tool" and result["tool_call_id"] == "call_1"
    assert json.loads(result["content"]) == {"output": {"time": "12:00"}}
    assert json.loads(tool_result_message("c", error="timeout")["content"]) == {"error": "timeout"}
    assert parse_arguments(call) == {"tz": "UTC"}
    assert parse_arguments(ToolCallRequest("c", "f", "")) == {}
    assert parse_arguments(ToolCallRequest("c", "f", "[1]")) is None
    assert parse_arguments(ToolCallRequest("c", "f", '{"a": ')) is None

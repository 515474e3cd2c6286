"""The local keyword engine: which tool the words name, and the arguments they give."""

from __future__ import annotations

import json

import pytest

from services.tools.llm.keyword import KeywordLlm, choose_call, fill_arguments, name_words, reply
from services.tools.llm.provider import TextDelta, ToolCallRequest, TurnEnd

COLOR = {"name": "set_background_color", "description": "",
         "parameters": {"type": "object", "required": ["color"],
                        "properties": {"color": {"type": "string", "enum": ["red", "blue"]}}}}
VOLUME = {"name": "setVolume", "description": "",
          "parameters": {"type": "object", "required": ["level"],
                         "properties": {"level": {"type": "integer"}}}}


def test_name_words_split_snake_and_camel_case_and_drop_generic_verbs():
    assert name_words("set_background_color") == {"background", "color"}
    assert name_words("setVolume") == {"volume"}


@pytest.mark.parametrize("text, expected", [
    ("please make the background blue", ("set_background_color", {"color": "blue"})),
    ("turn the volume to 7", ("setVolume", {"level": 7})),
    ("make the background purple", None),  # no enum value: a required argument is missing
    ("what time is it", None),  # no tool named
])
def test_choose_call(text, expected):
    assert choose_call(text, [COLOR, VOLUME]) == expected


def test_fill_arguments_leaves_out_what_was_not_said():
    schema = {"type": "object", "properties": {"n": {"type": "number"}, "s": {"type": "string"}}}
    assert fill_arguments(schema, "about 2.5 please") == {"n": 2.5}


def test_reply_reports_results_and_errors_of_the_last_round():
    messages = [
        {"role": "user", "content": "background red"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "set_background_color", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": json.dumps({"ok": True})},
    ]
    assert reply(messages, [COLOR]) == ("Done, set background color answered ok True.", [])
    messages[-1] = {"role": "tool", "tool_call_id": "c1",
                    "content": json.dumps({"error": {"code": "tool_timeout", "message": "too slow"}})}
    assert reply(messages, [COLOR])[0] == "Sorry, set background color failed: too slow"


async def test_the_engine_streams_words_then_calls_then_one_turn_end():
    events = [e async for e in KeywordLlm().stream([{"role": "user", "content": "hello there"}], [COLOR])]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "You said: hello there."
    assert events[-1] == TurnEnd("stop")
    events = [e async for e in KeywordLlm().stream([{"role": "user", "content": "background red"}], [COLOR])]
    [call] = [e for e in events if isinstance(e, ToolCallRequest)]
    assert json.loads(call.arguments_json) == {"color": "red"} and events[-1] == TurnEnd("tool_calls")

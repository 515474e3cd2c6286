"""The local assistant engine: a keyword matcher, not a language model.

It lets the embedded default (`parley up`, no keys, no network) run the whole assistant
path — tool calls to the client, results back, a spoken reply — so it can be tried and
tested offline. It understands exactly this much:

- The user's words name a tool when they contain a distinctive word of its name
  (`set_background_color` → "background" or "color"). Its arguments are filled from the
  words too: a string parameter with an `enum` takes the value the user said, a number
  takes the first number said. A tool is called only when every required parameter got a
  value; otherwise the engine says what it heard.
- After tool results it says what each tool answered.

Point `OPENAI_BASE_URL` at any OpenAI-compatible server (or set `OPENAI_API_KEY`) for a
real model; the chain then uses this engine only as its last resort.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from services.tools.llm.provider import LlmEvent, TextDelta, ToolCallRequest, TurnEnd

# Words too common in tool names to say which tool the user means.
_GENERIC = {"get", "set", "make", "do", "run", "call", "the", "a", "an", "to", "of", "for",
            "and", "or", "is", "in", "on", "by", "with", "new", "current", "value", "data"}
_WORD = re.compile(r"[a-z0-9]+")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def name_words(name: str) -> set[str]:
    """`setBackground_color-2` → {"background", "color", "2"} minus generic words."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name).lower()
    return set(_WORD.findall(spaced)) - _GENERIC


def fill_arguments(schema: dict, text: str) -> dict | None:
    """Arguments for `schema` taken from the user's words; None if a required one is missing."""
    words = set(_WORD.findall(text.lower()))
    arguments: dict[str, Any] = {}
    properties = schema.get("properties") or {}
    for name, prop in properties.items():
        if not isinstance(prop, dict):
            continue
        value = _value_for(prop, words, text)
        if value is not None:
            arguments[name] = value
    required = [r for r in schema.get("required") or [] if isinstance(r, str)]
    return arguments if all(r in arguments for r in required) else None


def _value_for(prop: dict, words: set[str], text: str) -> Any:
    enum = prop.get("enum")
    if isinstance(enum, list):
        return next((v for v in enum if isinstance(v, str) and v.lower() in words), None)
    kind = prop.get("type")
    if kind in ("number", "integer"):
        match = _NUMBER.search(text)
        if match:
            number = float(match.group())
            return int(number) if kind == "integer" else number
    return None


def choose_call(text: str, tools: list[dict]) -> tuple[str, dict] | None:
    """The tool the user's words name best (most distinctive name words), with arguments."""
    words = set(_WORD.findall(text.lower()))
    ranked = sorted(tools, key=lambda t: -len(name_words(t["name"]) & words))
    for tool in ranked:
        if not name_words(tool["name"]) & words:
            break
        arguments = fill_arguments(tool.get("parameters") or {}, text)
        if arguments is not None:
            return tool["name"], arguments
    return None


def reply(messages: list[dict], tools: list[dict]) -> tuple[str, list[ToolCallRequest]]:
    """What the engine says and calls, given the conversation (pure)."""
    last = messages[-1] if messages else {"role": "user", "content": ""}
    if last.get("role") == "tool":
        return _report_results(messages), []
    text = str(last.get("content") or "")
    chosen = choose_call(text, tools)
    if chosen is None:
        return (f"You said: {text.strip()}." if text.strip() else "I did not catch that."), []
    name, arguments = chosen
    digest = hashlib.sha256(f"{len(messages)}:{text}:{name}".encode()).hexdigest()[:16]
    return "", [ToolCallRequest(f"call_{digest}", name, json.dumps(arguments))]


def _report_results(messages: list[dict]) -> str:
    """One sentence per result of the last tool round."""
    names = {}
    for message in messages:
        for call in message.get("tool_calls") or []:
            names[call["id"]] = call["function"]["name"]
    sentences = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        name = names.get(message.get("tool_call_id"), "the tool").replace("_", " ")
        body = json.loads(message.get("content") or "null")
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):  # CallOutcome.for_model's shape of a failed call
            sentences.append(f"Sorry, {name} failed: {error.get('message')}")
        else:
            sentences.append(f"Done, {name} answered {_spoken(body)}.")
    return " ".join(reversed(sentences))


def _spoken(value: Any) -> str:
    if isinstance(value, dict):
        parts = [f"{k} {_spoken(v)}" for k, v in list(value.items())[:4]]
        return ", ".join(parts) or "nothing"
    if isinstance(value, list):
        return ", ".join(_spoken(v) for v in value[:4]) or "nothing"
    return str(value)[:80]


class KeywordLlm:
    """`LlmProvider` over `reply`; streams its words so sentences flow as with a model."""

    name = "local"

    async def stream(self, messages: list[dict], tools: list[dict], *,
                     instructions: str | None = None) -> AsyncIterator[LlmEvent]:
        text, calls = reply(messages, tools)
        for word in re.findall(r"\S+\s*", text):
            yield TextDelta(word)
        for call in calls:
            yield ToolCallRequest(call.call_id, call.name, call.arguments_json)
        yield TurnEnd("tool_calls" if calls else "stop")

    async def close(self) -> None:
        return None

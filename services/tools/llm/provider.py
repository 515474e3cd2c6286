"""The LLM capability: one small Protocol, a closed union of stream events, and the shapes
of the conversation messages every provider and the history store share.

Messages are the chat-completions shape (`role`, `content`, `tool_calls`, `tool_call_id`),
the lingua franca of OpenAI-compatible servers; build them with the helpers below. Tools
are described as in the client's `tool.register`: `{"name", "description", "parameters"}`.

A stream yields `TextDelta`s as the model writes, a `ToolCallRequest` per function call
once its arguments are complete, and always ends with exactly one `TurnEnd`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCallRequest:
    call_id: str
    name: str
    arguments_json: str  # as the model wrote it: usually, not always, a JSON object


@dataclass(frozen=True)
class TurnEnd:
    finish_reason: str  # "stop", "tool_calls", "length", "content_filter", …


LlmEvent = TextDelta | ToolCallRequest | TurnEnd


class LlmProvider(Protocol):
    name: str

    def stream(
        self, messages: list[dict], tools: list[dict], *, instructions: str | None
    ) -> AsyncIterator[LlmEvent]:
        """One model turn over `messages`, `instructions` as its system prompt."""

    async def close(self) -> None: ...


# ---- message shapes (pure) --------------------------------------------------------------


def user_message(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant_message(text: str, calls: Iterable[ToolCallRequest] = ()) -> dict:
    """The model's turn as history keeps it: its words and the calls it asked for."""
    message: dict = {"role": "assistant", "content": text or None}
    tool_calls = [{"id": c.call_id, "type": "function",
                   "function": {"name": c.name, "arguments": c.arguments_json}} for c in calls]
    if tool_calls:
        message["tool_calls"] = tool_calls
    elif message["content"] is None:
        message["content"] = ""  # an assistant message needs content or calls
    return message


def tool_result_message(call_id: str, output: object = None, error: str | None = None) -> dict:
    """A tool's answer (`tool.result`: `output` any JSON, or `error`) for the model."""
    body = {"error": error} if error is not None else {"output": output}
    return {"role": "tool", "tool_call_id": call_id, "content": json.dumps(body)}


def parse_arguments(call: ToolCallRequest) -> dict | None:
    """The call's arguments as a JSON object, or None when the model wrote something else
    (answer such a call with an error result rather than sending it to the client)."""
    try:
        arguments = json.loads(call.arguments_json or "{}")
    except ValueError:
        return None
    return arguments if isinstance(arguments, dict) else None

"""OpenAI Realtime (GA) wire events: client-event builders and a server-event parser (pure).

The bridge speaks PCM16 mono at 24 kHz both ways (the only PCM rate the GA API takes) and
turns server VAD off: the edge already decides where an utterance ends, and says so with
a chunk marked `last`, which becomes `input_audio_buffer.commit` + `response.create`.
Server events are mapped to a small closed union; everything else is `None` (ignored).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from shared.errors import ProviderBadResponse

RATE_HZ = 24000
PCM_FORMAT = {"type": "audio/pcm", "rate": RATE_HZ}
TRANSCRIBE_MODEL = "gpt-4o-mini-transcribe"
VOICES = frozenset("alloy ash ballad coral echo sage shimmer verse marin cedar".split())


# ---------------------------------------------------------------- client events

def tool_definition(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """One function tool in the GA shape (flat, unlike chat completions' nested one)."""
    return {"type": "function", "name": name, "description": description,
            "parameters": parameters}


def session_update(instructions: str, tools: list[dict[str, Any]], *, language: str | None = None,
                   voice: str | None = None) -> dict[str, Any]:
    """The whole session configuration; sent on connect and whenever tools change."""
    transcription: dict[str, Any] = {"model": TRANSCRIBE_MODEL}
    if language:
        transcription["language"] = language
    output: dict[str, Any] = {"format": PCM_FORMAT}
    if voice in VOICES:  # a Parley voice name of another engine would be refused
        output["voice"] = voice
    return {"type": "session.update", "session": {
        "type": "realtime",
        "output_modalities": ["audio"],
        "instructions": instructions,
        "audio": {"input": {"format": PCM_FORMAT, "turn_detection": None,
                            "transcription": transcription},
                  "output": output},
        "tools": tools,
        "tool_choice": "auto",
    }}


def append_audio(pcm_24k: bytes) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm_24k).decode()}


def commit_audio() -> dict[str, Any]:
    return {"type": "input_audio_buffer.commit"}


def clear_audio() -> dict[str, Any]:
    return {"type": "input_audio_buffer.clear"}


def create_item(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "conversation.item.create", "item": item}


def user_text_item(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def user_audio_item(pcm_24k: bytes) -> dict[str, Any]:
    """A user turn whose transcript never came: replayed as its audio."""
    audio = base64.b64encode(pcm_24k).decode()
    return {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": audio}]}


def assistant_text_item(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "assistant",
            "content": [{"type": "output_text", "text": text}]}


def function_call_item(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


def function_output_item(call_id: str, output: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def function_call_output(call_id: str, output: str) -> dict[str, Any]:
    return create_item(function_output_item(call_id, output))


def response_create() -> dict[str, Any]:
    return {"type": "response.create"}


def response_cancel(response_id: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "response.cancel"}
    if response_id:
        event["response_id"] = response_id
    return event


# ---------------------------------------------------------------- server events

@dataclass(frozen=True, slots=True)
class SessionCreated:
    session_id: str


@dataclass(frozen=True, slots=True)
class SessionUpdated:
    pass


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    response_id: str


@dataclass(frozen=True, slots=True)
class AudioOut:
    response_id: str
    pcm_24k: bytes


@dataclass(frozen=True, slots=True)
class AssistantDelta:
    response_id: str
    text: str


@dataclass(frozen=True, slots=True)
class AssistantDone:
    response_id: str
    text: str


@dataclass(frozen=True, slots=True)
class UserTranscript:
    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class FunctionCall:
    response_id: str
    call_id: str
    name: str
    arguments: str  # JSON text, as the model wrote it (not yet checked)


@dataclass(frozen=True, slots=True)
class ResponseDone:
    response_id: str
    status: str  # completed | cancelled | failed | incomplete
    error: str = ""


@dataclass(frozen=True, slots=True)
class ServerError:
    code: str
    message: str
    kind: str = ""  # the vendor's error `type`


ServerEvent = (SessionCreated | SessionUpdated | ResponseStarted | AudioOut | AssistantDelta
               | AssistantDone | UserTranscript | FunctionCall | ResponseDone | ServerError)

SESSION_EXPIRED = "session_expired"


def parse_server_event(event: Any) -> ServerEvent | None:
    """The domain event a server event carries; None for those the bridge does not use."""
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise ProviderBadResponse("OpenAI Realtime sent an event without a type")
    try:
        return _parse(event)
    except (KeyError, TypeError, AttributeError, ValueError, binascii.Error) as exc:
        raise ProviderBadResponse(f"OpenAI Realtime {event['type']} is off its documented "
                                  "shape") from exc


def _parse(event: dict[str, Any]) -> ServerEvent | None:
    match event["type"]:
        case "session.created":
            return SessionCreated(str(event["session"].get("id", "")))
        case "session.updated":
            return SessionUpdated()
        case "response.created":
            return ResponseStarted(_str(event["response"]["id"]))
        case "response.output_audio.delta":
            pcm = base64.b64decode(event["delta"], validate=True)
            if len(pcm) % 2:
                raise ValueError("odd PCM16 byte count")
            return AudioOut(_str(event["response_id"]), pcm)
        case "response.output_audio_transcript.delta" | "response.output_text.delta":
            return AssistantDelta(_str(event["response_id"]), _str(event["delta"]))
        case "response.output_audio_transcript.done":
            return AssistantDone(_str(event["response_id"]), _str(event["transcript"]))
        case "response.output_text.done":
            return AssistantDone(_str(event["response_id"]), _str(event["text"]))
        case "conversation.item.input_audio_transcription.completed":
            return UserTranscript(_str(event["item_id"]), _str(event["transcript"]))
        case "response.function_call_arguments.done":
            return FunctionCall(_str(event["response_id"]), _str(event["call_id"]),
                                _str(event["name"]), _str(event["arguments"]))
        case "response.done":
            return _response_done(event["response"])
        case "error":
            error = event["error"]
            return ServerError(str(error.get("code") or ""), str(error.get("message") or ""),
                               str(error.get("type") or ""))
    return None


def _response_done(response: dict[str, Any]) -> ResponseDone:
    details = response.get("status_details") or {}
    error = details.get("error") or {}
    reason = error.get("code") or error.get("message") or details.get("reason") or ""
    return ResponseDone(_str(response["id"]), _str(response["status"]), str(reason))


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value

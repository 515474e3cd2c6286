"""Reading OpenAI Realtime client events (pure): JSON, fields, session.update's parts.

`BadEvent` carries a Realtime error code, message and `param`; realtime_api turns it into
an `error` event and the connection stays open.
"""

from __future__ import annotations

import json
import re
from typing import Any

from services.edge import wire

RATE_HZ = 24000  # Realtime's audio/pcm: PCM16LE mono at 24 kHz, in and out
PCM = {"type": "audio/pcm", "rate": RATE_HZ}
_LANGUAGE = re.compile(r"([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]{1,8})*")


class BadEvent(Exception):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def read_session(session: dict) -> tuple[str | None, str | None, dict | None, list | None]:
    """A session.update's language, instructions, tools and modalities (None: not given)."""
    for side in ("input", "output"):
        fmt = dig(session, "audio", side, "format")
        if fmt is not None and (not isinstance(fmt, dict) or {**PCM, **fmt} != PCM):
            raise BadEvent("invalid_value", "Parley speaks audio/pcm at 24000 Hz only", f"session.audio.{side}.format")
    modalities = get_field(session, "output_modalities", list, required=False)
    if modalities is not None and modalities not in (["audio"], ["text"]):
        raise BadEvent("invalid_value", "output_modalities must be ['audio'] or ['text']", "session.output_modalities")
    language = dig(session, "audio", "input", "transcription", "language")
    if language is not None:
        match = _LANGUAGE.fullmatch(language) if isinstance(language, str) else None
        if match is None:
            raise BadEvent("invalid_value", f"not a language tag: {show(language)}",
                       "session.audio.input.transcription.language")
        language = match.group(1).lower()
    instructions = get_field(session, "instructions", str, required=False)
    return language, instructions, read_tools(session.get("tools")), modalities


def read_tools(tools: Any) -> dict[str, dict] | None:
    """Realtime function tools as Parley `tool.register` messages, by name."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise BadEvent("invalid_value", "tools must be an array", "session.tools")
    parsed: dict[str, dict] = {}
    for i, tool in enumerate(tools):
        where = f"session.tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise BadEvent("invalid_value", "Parley supports tools of type 'function' only", where)
        register = {"type": "tool.register", "name": tool.get("name"),
                    "description": tool.get("description") or "",
                    "parameters": tool.get("parameters") or {"type": "object", "properties": {}}}
        try:  # the edge's own checks, so a bad tool is refused here, with its index
            wire.parse_text(json.dumps(register), wire.Limits())
        except (wire.ProtocolError, TypeError, ValueError) as exc:
            raise BadEvent("invalid_value", getattr(exc, "message", str(exc)), where) from None
        if register["name"] in parsed:
            raise BadEvent("invalid_value", f"tool {register['name']!r} is listed twice", where)
        parsed[register["name"]] = register
    return parsed


def parley_id(event: dict) -> str:
    return str(event.get("response_id") or event.get("utterance_id") or "")


def tool_fields(tool: dict) -> dict:
    return {k: tool[k] for k in ("name", "description", "parameters")}


def copy_item(item: dict) -> dict:
    return {**item, "content": [dict(c) for c in item["content"]]} if "content" in item else dict(item)


def json_or_text(text: str) -> Any:
    """A function's output as JSON when it is JSON (NaN and friends are not), else the text."""
    def no_constant(name: str) -> Any:
        raise ValueError(name)
    try:
        return json.loads(text, parse_constant=no_constant)
    except (ValueError, RecursionError):
        return text


def load_event(frame: str) -> dict:
    try:
        obj = json.loads(frame)
    except (ValueError, RecursionError):
        raise BadEvent("invalid_json", "the event is not valid JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise BadEvent("invalid_value", "an event must be a JSON object with a string field 'type'", "type")
    return obj


def get_field(obj: dict, key: str, kind: type, *, required: bool = True, where: str = "") -> Any:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        what = "missing" if value is None else f"must be {kind.__name__}, not {type(value).__name__}"
        raise BadEvent("missing_required_parameter" if value is None else "invalid_type",
                   f"'{where}{key}' {what}", where + key)
    return value


def dig(obj: Any, *keys: str) -> Any:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"

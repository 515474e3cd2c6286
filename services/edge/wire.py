"""Client protocol v1 (PROTOCOL.md): client frames → typed commands, server events → JSON.

Pure: no I/O. Every way a client frame can be wrong raises `ProtocolError` carrying the
error code the client is sent; nothing else escapes `parse_text` / `parse_binary`.
Choices the protocol leaves open (binding for the edge):
- unknown extra fields are ignored (clients may already send newer optional fields);
  JSON `null` in an optional field means absent, in a required one, missing;
- languages become their lowercase primary subtag ("en-US", "pt_BR" → "en", "pt");
- `session.resume` without `last_seq` means 0: replay everything still held;
- `tool.register` needs `name`, `description`, `parameters` (only `timeout_ms` is optional);
  a `tools` list naming one tool twice is rejected;
- `tool.result` needs `call_id` and either `error` (string) or `output` (any JSON, `null`
  included), not both; NaN and Infinity are not JSON and are rejected.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any

INVALID_MESSAGE = "invalid_message"
INVALID_AUDIO = "invalid_audio"

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 48000
DEFAULT_SAMPLE_RATE = 16000
MAX_TOOL_TIMEOUT_MS = 30000
MODES = ("translate", "assistant")
ASSISTANT_ENGINES = ("pipeline", "realtime")  # STT → model → TTS, or OpenAI Realtime

_MAX_SEQ = 2**63 - 1  # NATS stream sequences are uint64; JSON ints beyond are nonsense here
_MAX_ID_CHARS = 256  # call ids, resume tokens, ping ids, voices: ours or short by nature
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_LANGUAGE = re.compile(r"([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]{1,8})*")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_JSON_TYPES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               list: "an array", dict: "an object"}


class ProtocolError(Exception):
    """A client frame that breaks the protocol; `code` is the `error` event's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Limits:
    max_text_frame_bytes: int = 65536
    max_frame_audio_s: float = 1.0

    def __post_init__(self) -> None:
        if self.max_text_frame_bytes <= 0 or self.max_frame_audio_s <= 0:
            raise ValueError("limits must be positive")


@dataclass(frozen=True, slots=True)
class ToolRegister:
    name: str
    description: str
    parameters: dict[str, Any]  # a JSON Schema object; treat as read-only
    timeout_ms: int | None = None


@dataclass(frozen=True, slots=True)
class SessionStart:
    mode: str
    language: str
    target_language: str | None = None
    room: str | None = None
    input_sample_rate: int = DEFAULT_SAMPLE_RATE
    output_sample_rate: int = DEFAULT_SAMPLE_RATE
    voice: str | None = None
    instructions: str | None = None
    tools: tuple[ToolRegister, ...] = ()
    engine: str | None = None  # assistant: "pipeline" or "realtime"; None: the server's default


@dataclass(frozen=True, slots=True)
class SessionResume:
    session_id: str
    resume_token: str
    last_seq: int = 0


@dataclass(frozen=True, slots=True)
class AudioAppend:
    pcm: bytes  # PCM16LE mono at the session's input_sample_rate, validated


@dataclass(frozen=True, slots=True)
class AudioCommit:
    pass


@dataclass(frozen=True, slots=True)
class ToolUnregister:
    name: str


@dataclass(frozen=True, slots=True)
class ToolResult:
    call_id: str
    output: Any = None
    error: str | None = None  # not None: the tool failed, `output` is meaningless


@dataclass(frozen=True, slots=True)
class ResponseCancel:
    pass


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int


@dataclass(frozen=True, slots=True)
class Ping:
    id: str | int | None = None


@dataclass(frozen=True, slots=True)
class SessionEnd:
    pass


Command = (SessionStart | SessionResume | AudioAppend | AudioCommit | ToolRegister
           | ToolUnregister | ToolResult | ResponseCancel | Ack | Ping | SessionEnd)

_TYPE_NAMES = {SessionStart: "session.start", SessionResume: "session.resume",
               AudioAppend: "input_audio.append", AudioCommit: "input_audio.commit",
               ToolRegister: "tool.register", ToolUnregister: "tool.unregister",
               ToolResult: "tool.result", ResponseCancel: "response.cancel", Ack: "ack",
               Ping: "ping", SessionEnd: "session.end"}
_REQUIRED: Any = object()


# ---------------------------------------------------------------- parsing: entry points

def parse_text(frame: str | bytes, limits: Limits, *, sample_rate: int | None = None) -> Command:
    """Parse one text frame. `sample_rate` (the session's input rate, once known) bounds
    `input_audio.append`; before that, the largest allowed rate is assumed."""
    obj = _load_json(frame, limits)
    match kind := obj.get("type"):
        case "session.start":
            return _session_start(obj)
        case "session.resume":
            return SessionResume(_token(obj, "session_id"), _short_str(obj, "resume_token"),
                                 _int(obj, "last_seq", 0, _MAX_SEQ, default=0))
        case "input_audio.append":
            return AudioAppend(_audio_field(obj, sample_rate or MAX_SAMPLE_RATE, limits))
        case "input_audio.commit":
            return AudioCommit()
        case "tool.register":
            return _tool(obj)
        case "tool.unregister":
            return ToolUnregister(_token(obj, "name"))
        case "tool.result":
            return _tool_result(obj)
        case "ack":
            return Ack(_int(obj, "seq", 0, _MAX_SEQ))
        case "response.cancel":
            return ResponseCancel()
        case "ping":
            return Ping(_ping_id(obj))
        case "session.end":
            return SessionEnd()
        case str():
            raise _bad(f"unknown message type {_show(kind)}")
        case _:
            raise _bad("a text frame must be a JSON object with a string field 'type'")


def parse_binary(frame: bytes, sample_rate: int, limits: Limits) -> AudioAppend:
    """Validate one binary frame of PCM16LE audio at the session's input rate."""
    return AudioAppend(_check_pcm(bytes(frame), sample_rate, limits))


def _load_json(frame: str | bytes, limits: Limits) -> dict[str, Any]:
    limit = limits.max_text_frame_bytes
    try:
        # A character is at least one UTF-8 byte: refuse huge strings before encoding them.
        data = frame if len(frame) > limit or not isinstance(frame, str) else frame.encode()
        if len(data) > limit:
            raise _bad(f"text frame exceeds the limit of {limit} bytes")
        obj = json.loads(data, parse_constant=_reject_constant)
        if _SURROGATE_ESCAPE.search(data):  # "\ud800" alone parses, then breaks msgpack
            json.dumps(obj, ensure_ascii=False).encode()
    except (ValueError, RecursionError):  # bad UTF-8 or JSON; RecursionError: deep nesting
        raise _bad("text frame is not valid UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise _bad("a text frame must be a JSON object with a string field 'type'")
    return obj


def _reject_constant(name: str) -> Any:
    raise _bad(f"text frame is not valid JSON ({name} is not a JSON value)")


# ---------------------------------------------------------------- parsing: messages

def _session_start(obj: dict[str, Any]) -> SessionStart:
    mode = _field(obj, "mode", str)
    if mode not in MODES:
        raise _bad(f"field 'mode' must be 'translate' or 'assistant', not {_show(mode)}")
    room = _token(obj, "room", required=False)
    target = _language(obj, "target_language", required=False)
    if mode == "translate" and room is None and target is None:
        raise _bad("field 'target_language' is required in translate mode without a 'room'")
    return SessionStart(
        mode=mode, language=_language(obj, "language"), target_language=target, room=room,
        input_sample_rate=_rate(obj, "input_sample_rate"),
        output_sample_rate=_rate(obj, "output_sample_rate"),
        voice=_short_str(obj, "voice", required=False),
        instructions=_field(obj, "instructions", str, required=False),
        tools=_tools(obj),
        engine=_engine(obj),
    )


def _engine(obj: dict[str, Any]) -> str | None:
    engine = _field(obj, "engine", str, required=False)
    if engine is not None and engine not in ASSISTANT_ENGINES:
        raise _bad(f"field 'engine' must be 'pipeline' or 'realtime', not {_show(engine)}")
    return engine


def _tools(obj: dict[str, Any]) -> tuple[ToolRegister, ...]:
    items = _field(obj, "tools", list, required=False) or []
    tools, names = [], set()
    for i, item in enumerate(items):
        where = f"tools[{i}]"
        if not isinstance(item, dict):
            raise _bad(f"'{where}' must be an object, got {_json_type(item)}")
        tool = _tool(item, where + ".")
        if tool.name in names:
            raise _bad(f"'{where}.name': tool {_show(tool.name)} is listed twice")
        names.add(tool.name)
        tools.append(tool)
    return tuple(tools)


def _tool(obj: dict[str, Any], where: str = "") -> ToolRegister:
    return ToolRegister(
        name=_token(obj, "name", where=where),
        description=_field(obj, "description", str, where=where),
        parameters=_field(obj, "parameters", dict, where=where),
        timeout_ms=_int(obj, "timeout_ms", 1, MAX_TOOL_TIMEOUT_MS, default=None, where=where),
    )


def _tool_result(obj: dict[str, Any]) -> ToolResult:
    call_id = _short_str(obj, "call_id")
    error = _field(obj, "error", str, required=False)
    if error is not None:
        if obj.get("output") is not None:
            raise _bad("tool.result takes either 'output' or 'error', not both")
        return ToolResult(call_id, error=error)
    if "output" not in obj:
        raise _bad("tool.result needs 'output' or 'error'")
    return ToolResult(call_id, output=obj["output"])


def _ping_id(obj: dict[str, Any]) -> str | int | None:
    value = obj.get("id")
    if value is None or (type(value) is int and abs(value) <= _MAX_SEQ):
        return value
    if isinstance(value, str) and len(value) <= _MAX_ID_CHARS:
        return value
    raise _bad(f"field 'id' must be a string of at most {_MAX_ID_CHARS} characters or an integer")


def _audio_field(obj: dict[str, Any], sample_rate: int, limits: Limits) -> bytes:
    text = _field(obj, "audio", str)
    try:
        pcm = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII characters
        raise ProtocolError(INVALID_AUDIO, "field 'audio' is not valid base64") from None
    return _check_pcm(pcm, sample_rate, limits)


def _check_pcm(pcm: bytes, sample_rate: int, limits: Limits) -> bytes:
    if not pcm:
        raise ProtocolError(INVALID_AUDIO, "audio frame is empty")
    if len(pcm) % 2:
        raise ProtocolError(INVALID_AUDIO, f"audio frame has an odd byte count ({len(pcm)}); "
                            "PCM16LE needs whole 2-byte samples")
    max_samples = int(limits.max_frame_audio_s * sample_rate)
    if len(pcm) // 2 > max_samples:
        seconds = len(pcm) / 2 / sample_rate
        raise ProtocolError(INVALID_AUDIO, f"audio frame holds {seconds:.3f} s at "
                            f"{sample_rate} Hz; the limit is {limits.max_frame_audio_s:g} s")
    return pcm


# ---------------------------------------------------------------- parsing: fields

def _field(obj: dict[str, Any], key: str, kind: type, *, required: bool = True,
           where: str = "") -> Any:
    value = obj.get(key)
    if value is None:
        if required:
            raise _bad(f"missing required field '{where}{key}'")
        return None
    if type(value) is not kind:  # exact: JSON true must not pass as an integer
        raise _bad(f"field '{where}{key}' must be {_JSON_TYPES[kind]}, got {_json_type(value)}")
    return value


def _short_str(obj: dict[str, Any], key: str, *, required: bool = True) -> Any:
    value = _field(obj, key, str, required=required)
    if value is not None and not 1 <= len(value) <= _MAX_ID_CHARS:
        raise _bad(f"field '{key}' must hold 1 to {_MAX_ID_CHARS} characters")
    return value


def _token(obj: dict[str, Any], key: str, *, required: bool = True, where: str = "") -> Any:
    value = _field(obj, key, str, required=required, where=where)
    if value is not None and not _TOKEN.fullmatch(value):
        raise _bad(f"field '{where}{key}' must match ^[A-Za-z0-9_-]{{1,64}}$, not {_show(value)}")
    return value


def _int(obj: dict[str, Any], key: str, low: int, high: int, *, default: Any = _REQUIRED,
         where: str = "") -> Any:
    value = _field(obj, key, int, required=default is _REQUIRED, where=where)
    if value is None:
        return default
    if not low <= value <= high:
        raise _bad(f"field '{where}{key}' must be between {low} and {high}, not {_show(value)}")
    return value


def _rate(obj: dict[str, Any], key: str) -> int:
    return _int(obj, key, MIN_SAMPLE_RATE, MAX_SAMPLE_RATE, default=DEFAULT_SAMPLE_RATE)


def _language(obj: dict[str, Any], key: str, *, required: bool = True) -> Any:
    value = _field(obj, key, str, required=required)
    if value is None:
        return None
    match = _LANGUAGE.fullmatch(value)
    if not match:
        raise _bad(f"field '{key}' must be a BCP-47 language tag such as 'en', not {_show(value)}")
    return match.group(1).lower()


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), "null" if value is None else type(value).__name__)


def _show(value: str | int, limit: int = 40) -> str:
    """A short rendering of client input for error messages: never echo a huge value back."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bad(message: str) -> ProtocolError:
    return ProtocolError(INVALID_MESSAGE, message)


# ---------------------------------------------------------------- encoding

def encode_event(event: dict[str, Any]) -> str:
    """Server → client JSON text; `bytes` values anywhere (audio) become base64."""
    return json.dumps(event, default=_encode_bytes, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False)


def _encode_bytes(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_command(command: Command) -> str:
    """Client → edge JSON text for a command (Python clients, load generator, tests)."""
    return json.dumps(_command_fields(command), separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def _command_fields(command: Command) -> dict[str, Any]:
    fields: dict[str, Any] = {"type": _TYPE_NAMES[type(command)]}
    match command:
        case AudioAppend(pcm=pcm):
            fields["audio"] = base64.b64encode(pcm).decode("ascii")
        case ToolResult(call_id=call_id, output=output, error=None):
            fields |= {"call_id": call_id, "output": output}  # a null output is still sent
        case ToolResult(call_id=call_id, error=error):
            fields |= {"call_id": call_id, "error": error}
        case SessionStart(tools=tools):
            fields |= _present(command)
            fields["tools"] = [_present(tool) for tool in tools]
        case _:
            fields |= _present(command)
    return fields


def _present(command: Any) -> dict[str, Any]:
    """A dataclass's fields without the None ones (absent and null mean the same here)."""
    return {f.name: getattr(command, f.name) for f in dataclasses.fields(command)
            if getattr(command, f.name) is not None}

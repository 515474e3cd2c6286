"""Typed, versioned bus messages and their msgpack wire form.

Every message on NATS is a msgpack map ``{"t": <type tag>, "v": <schema version>, ...fields}``.
The tag registry below is explicit: decoding never imports anything a sender names.
Audio travels as msgpack ``bin``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack

SCHEMA_VERSION = 1


class DecodeError(ValueError):
    """A bus payload that is not a known, well-formed message."""


@dataclass(frozen=True, slots=True)
class Listener:
    """One recipient of an utterance's rendering: who, in which language, how it sounds."""

    sid: str
    language: str
    output_sample_rate: int = 16000
    voice: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """Who hears a speaker: every member gets captions; `listeners` get translation + speech.

    Computed by the edge from the session (solo) or the room's membership, and kept current
    on the STT worker through ``parley.ctl.<sid>``.
    """

    captions_to: tuple[str, ...]
    listeners: tuple[Listener, ...]


@dataclass(frozen=True, slots=True)
class ToolDecl:
    """One function a client registered (schema already checked by the edge)."""

    name: str
    description: str
    parameters: dict[str, Any]  # JSON Schema; read-only
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Assistant:
    """An assistant session's configuration, as the edge holds it now.

    It travels with the session (claim, ctl updates, each turn's work item) rather than
    through shared state, so the embedded default needs no Redis.
    """

    instructions: str
    tools: tuple[ToolDecl, ...]
    language: str
    output_sample_rate: int
    voice: str | None = None
    engine: str = "pipeline"  # "pipeline" (STT → LLM → TTS) or "realtime" (speech to speech)


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Edge → STT owner: one chunk of an utterance (PCM16LE mono)."""

    TAG: ClassVar[str] = "audio"
    sid: str
    utterance_id: str
    index: int
    sample_rate: int
    pcm: bytes
    last: bool = False


@dataclass(frozen=True, slots=True)
class SttClaim:
    """Edge → any STT worker (queue group): take ownership of a session's audio stream."""

    TAG: ClassVar[str] = "stt.claim"
    sid: str
    language: str
    sample_rate: int
    route: Route
    principal: str = "anonymous"
    assistant: Assistant | None = None  # set: finals become assistant turns, not translations


@dataclass(frozen=True, slots=True)
class SttClaimed:
    """STT worker → edge: the claim is taken; the owner renews its lease every lease_s/3."""

    TAG: ClassVar[str] = "stt.claimed"
    sid: str
    worker_id: str
    lease_s: float


@dataclass(frozen=True, slots=True)
class SttLease:
    """STT owner → edge, on ``parley.stt.lease.<sid>``: still alive, still owning, and done
    with every utterance up to `finished` (the edge may forget that audio)."""

    TAG: ClassVar[str] = "stt.lease"
    sid: str
    worker_id: str
    finished: str = ""


@dataclass(frozen=True, slots=True)
class RouteUpdate:
    """Edge → session workers on ``parley.ctl.<sid>``: the room's membership changed."""

    TAG: ClassVar[str] = "ctl.route"
    sid: str
    route: Route


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """Edge → session workers on ``parley.ctl.<sid>``: drop every per-session resource."""

    TAG: ClassVar[str] = "ctl.end"
    sid: str
    reason: str = "ended"


@dataclass(frozen=True, slots=True)
class AssistantUpdate:
    """Edge → session workers on ``parley.ctl.<sid>``: tools or instructions changed."""

    TAG: ClassVar[str] = "ctl.assistant"
    sid: str
    assistant: Assistant


@dataclass(frozen=True, slots=True)
class CancelResponse:
    """Edge → session workers on ``parley.ctl.<sid>``: barge-in; stop the reply now."""

    TAG: ClassVar[str] = "ctl.cancel"
    sid: str
    response_id: str = ""  # "" = whatever reply is in progress


@dataclass(frozen=True, slots=True)
class ClientPresence:
    """Edge → session workers on ``parley.ctl.<sid>``: the client dropped or came back, so
    a tool call waits for the resume window instead of its own timeout, and is sent again."""

    TAG: ClassVar[str] = "ctl.presence"
    sid: str
    connected: bool


@dataclass(frozen=True, slots=True)
class AssistantTurn:
    """STT owner → tools queue: the user said `text`; answer it."""

    TAG: ClassVar[str] = "work.assistant"
    sid: str
    utterance_id: str
    text: str
    assistant: Assistant
    principal: str = "anonymous"


@dataclass(frozen=True, slots=True)
class ToolAnswer:
    """Edge → turn runner, a request on ``parley.toolres.<sid>``: the client's tool.result."""

    TAG: ClassVar[str] = "tool.answer"
    sid: str
    call_id: str
    output: Any = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ToolAnswerAck:
    """Turn runner → edge: whether a pending call took the answer."""

    TAG: ClassVar[str] = "tool.ack"
    call_id: str
    accepted: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TranslateWork:
    """STT → translate queue: render one final transcript into one target language."""

    TAG: ClassVar[str] = "work.translate"
    speaker: str
    utterance_id: str
    text: str
    source_language: str
    target_language: str
    listeners: tuple[Listener, ...]
    principal: str = "anonymous"


@dataclass(frozen=True, slots=True)
class TtsWork:
    """Translate → tts queue: speak one text to listeners sharing language, voice and rate."""

    TAG: ClassVar[str] = "work.tts"
    utterance_id: str
    text: str
    language: str
    sample_rate: int
    voice: str | None
    recipients: tuple[str, ...]
    speaker: str = ""  # whose utterance this is: usage and cost are theirs
    principal: str = "anonymous"
    response_id: str = ""  # set: one sentence (`segment`) of an assistant reply; no audio.done
    segment: int = 0


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """Any process → ``parley.out.<sid>``: one durable event for the client, as its fields.

    ``bytes`` values (audio) are base64-encoded by the edge when it writes the JSON frame.
    """

    TAG: ClassVar[str] = "event"
    event: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """Worker → edge: what this worker's engines can do (capabilities as data)."""

    TAG: ClassVar[str] = "caps"
    kind: str
    languages: tuple[str, ...] = ()
    pairs: tuple[tuple[str, str], ...] = ()
    engines: tuple[str, ...] = ()  # tools: the assistant engines it can run


MESSAGE_TYPES: dict[str, type] = {
    cls.TAG: cls
    for cls in (
        AudioChunk,
        SttClaim,
        SttClaimed,
        SttLease,
        RouteUpdate,
        SessionEnd,
        AssistantUpdate,
        CancelResponse,
        ClientPresence,
        AssistantTurn,
        ToolAnswer,
        ToolAnswerAck,
        TranslateWork,
        TtsWork,
        ClientEvent,
        Capabilities,
    )
}

# Nested dataclasses are rebuilt field by field on decode; this says which fields hold what.
_NESTED = {
    (SttClaim, "route"): "route",
    (RouteUpdate, "route"): "route",
    (TranslateWork, "listeners"): "listeners",
    (SttClaim, "assistant"): "assistant",
    (AssistantUpdate, "assistant"): "assistant",
    (AssistantTurn, "assistant"): "assistant",
    (ToolAnswer, "output"): "raw",
    (ClientEvent, "event"): "raw",
}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _listeners(raw: list) -> tuple[Listener, ...]:
    return tuple(Listener(**item) for item in raw)


def _route(raw: dict) -> Route:
    return Route(captions_to=tuple(raw["captions_to"]), listeners=_listeners(raw["listeners"]))


def _assistant(raw: dict | None) -> Assistant | None:
    if raw is None:
        return None
    tools = tuple(ToolDecl(**item) for item in raw["tools"])
    return Assistant(**{**raw, "tools": tools})


def encode(message: Any) -> bytes:
    body = _plain(message)
    body["t"] = message.TAG
    body["v"] = SCHEMA_VERSION
    return msgpack.packb(body, use_bin_type=True)


def decode(payload: bytes) -> Any:
    try:
        body = msgpack.unpackb(payload, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise DecodeError(f"not msgpack: {exc}") from None
    if not isinstance(body, dict):
        raise DecodeError("not a map")
    cls = MESSAGE_TYPES.get(body.pop("t", None))
    if cls is None:
        raise DecodeError("unknown message type")
    if body.pop("v", None) != SCHEMA_VERSION:
        raise DecodeError("unsupported schema version")
    try:
        for name, value in body.items():
            kind = _NESTED.get((cls, name))
            if kind == "route":
                body[name] = _route(value)
            elif kind == "listeners":
                body[name] = _listeners(value)
            elif kind == "assistant":
                body[name] = _assistant(value)
            elif kind == "raw":
                pass  # JSON from a client: kept exactly as it came
            elif isinstance(value, list):  # msgpack has no tuples; ours are immutable
                body[name] = _tuples(value)
        return cls(**body)
    except (TypeError, KeyError, AttributeError) as exc:
        raise DecodeError(f"bad {cls.TAG} message: {exc}") from None

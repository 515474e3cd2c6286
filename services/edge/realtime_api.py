"""OpenAI Realtime API (GA) ⇄ Parley client protocol v1: a pure translator, no I/O.

`RealtimeSocket` runs one `Session` over it, so /v1/realtime is the Parley protocol seen
through Realtime's vocabulary (docs/PROTOCOL-NOTES.md, "/v1/realtime", has the client's
view). The choices that shape it:
- The session starts implicitly in assistant mode at 24 kHz both ways (Realtime's audio/pcm).
  `session.update`s sent before any other event fold into that `session.start`
  (instructions, transcription language); after it only tools and modalities can change.
- Parley always endpoints speech itself, so `input_audio_buffer.committed` comes from
  Parley's `speech.stopped` — whether silence or `commit` ended the utterance — once per
  utterance, never for a buffer in which no speech was heard.
- Parley answers every utterance and continues after tool results by itself; a Parley
  reply is cut into Realtime responses at each tool call (a response with a function call
  ends with it, as Realtime clients expect). `response.create` only opens the response the
  next reply will fill, so its `response.created` comes at once.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from services.edge.realtime_input import (
    PCM,
    RATE_HZ,
    BadEvent,
    copy_item,
    get_field,
    json_or_text,
    load_event,
    parley_id,
    read_session,
    show,
    tool_fields,
)

FRAME_BYTES = 2 * RATE_HZ  # Parley takes at most 1 s of audio per frame
_KEPT_IDS = 64  # recent Parley replies remembered, to drop their late events
_STATUS = {"completed": "completed", "cancelled": "cancelled", "failed": "failed", "step_limit": "incomplete"}
_ERROR_TYPES = {"rate_limited": "rate_limit_error", "internal": "server_error",
                "provider_unavailable": "server_error"}
_UNSUPPORTED = ("conversation.item.truncate", "conversation.item.delete",
                "conversation.item.retrieve", "output_audio_buffer.clear")

ParleyMessage = dict | bytes  # a text message, or a binary frame of PCM16LE audio


@dataclass
class Translation:
    to_parley: list[ParleyMessage] = field(default_factory=list)
    to_client: list[dict] = field(default_factory=list)  # Realtime server events, sent now


@dataclass
class _Response:
    """One Realtime response; `parley_id` None until a Parley reply fills it."""
    id: str
    parley_id: str | None
    output: list[dict] = field(default_factory=list)
    message: dict | None = None  # the assistant message being spoken, while open
    transcript: str = ""


class RealtimeTranslator:
    _CLIENT = {"session.update": "_session_update", "input_audio_buffer.append": "_append",
               "input_audio_buffer.commit": "_commit", "input_audio_buffer.clear": "_clear",
               "conversation.item.create": "_item_create", "response.create": "_response_create",
               "response.cancel": "_response_cancel"}
    # Not here: audio.done (a message's audio ends at its tool call or response.done anyway);
    # usage, warning, pong, session.ended, translation (Realtime has no counterpart).
    _PARLEY = {"session.started": "_started", "speech.started": "_speech_started",
               "speech.stopped": "_speech_stopped", "transcript.partial": "_partial",
               "transcript.final": "_final", "response.text": "_say", "audio.delta": "_say",
               "tool.call": "_tool_call", "response.done": "_done", "error": "_parley_error"}

    def __init__(self, model: str = "gpt-realtime") -> None:
        self.model = model
        self.started = False
        self.session_id: str | None = None
        self.language = "en"
        self.instructions = ""
        self.audio_out = True  # output_modalities ["audio"]; False: ["text"]
        self._ids = itertools.count(1)
        self._tools: dict[str, dict] = {}  # wanted: name → tool.register message
        self._registered: dict[str, dict] = {}  # as Parley has them
        self._early_update = False
        self._samples_in = 0
        self._items: dict[str, str] = {}  # Parley utterance_id → Realtime item id
        self._partials: dict[str, str] = {}
        self._last_item: str | None = None
        self._active: _Response | None = None
        self._seen: deque[str] = deque(maxlen=_KEPT_IDS)
        self._finished: deque[str] = deque(maxlen=_KEPT_IDS)

    # ------------------------------------------------------------ client → Parley

    def start(self) -> Translation:
        """The implicit `session.start`, with what `session.update`s asked for so far."""
        self.started, self._registered = True, dict(self._tools)
        start = {"type": "session.start", "mode": "assistant", "language": self.language,
                 "input_sample_rate": RATE_HZ, "output_sample_rate": RATE_HZ,
                 "tools": [tool_fields(t) for t in self._tools.values()]}
        return Translation([{**start, "instructions": self.instructions} if self.instructions else start])

    def client_event(self, frame: str | bytes) -> Translation:
        """One Realtime client frame. Bad input yields an `error` event and changes nothing."""
        out, event_id = Translation(), None
        try:
            if isinstance(frame, bytes):
                raise BadEvent("invalid_value", "binary frames are not part of the Realtime API; "
                           "send audio with input_audio_buffer.append")
            obj = load_event(frame)
            event_id = obj.get("event_id") if isinstance(obj.get("event_id"), str) else None
            kind = obj.get("type")
            if kind in _UNSUPPORTED:
                raise BadEvent("unsupported_event", f"{kind} is not supported by Parley", "type")
            if kind not in self._CLIENT:
                raise BadEvent("invalid_value", f"unknown event type {show(kind)}", "type")
            if not self.started and kind != "session.update":
                out = self.start()
            getattr(self, self._CLIENT[kind])(obj, out)
        except BadEvent as bad:
            out.to_client.append(self._error(bad.code, bad.message, bad.param, event_id))
        return out

    def _session_update(self, obj: dict, out: Translation) -> None:
        language, instructions, tools, modalities = read_session(get_field(obj, "session", dict))
        fixed = [name for name, new, old in (("instructions", instructions, self.instructions),
                                             ("language", language, self.language))
                 if self.started and new is not None and new != old]
        if not self.started:
            self.language, self._early_update = language or self.language, True
            self.instructions = self.instructions if instructions is None else instructions
        if modalities is not None:
            self.audio_out = modalities == ["audio"]
        if tools is not None:
            self._tools = tools
            out.to_parley += self._sync_tools() if self.started else []
        if self.started:
            out.to_client.append(self._event("session.updated", session=self._session()))
        if fixed:
            out.to_client.append(self._error(
                "unsupported_update", f"{' and '.join(fixed)} can only be set before the session "
                "starts (in session.update events sent before any other event); kept as they were",
                "session." + fixed[0]))

    def _sync_tools(self) -> list[dict]:
        """`tool.unregister` for dropped tools, `tool.register` for new or changed ones."""
        messages: list[dict] = [{"type": "tool.unregister", "name": name}
                                for name in self._registered if name not in self._tools]
        messages += [tool for name, tool in self._tools.items() if self._registered.get(name) != tool]
        self._registered = dict(self._tools)
        return messages

    def _append(self, obj: dict, out: Translation) -> None:
        try:
            pcm = base64.b64decode(get_field(obj, "audio", str), validate=True)
        except (binascii.Error, ValueError):
            raise BadEvent("invalid_value", "audio is not valid base64", "audio") from None
        if not pcm or len(pcm) % 2:
            raise BadEvent("invalid_value", "audio must hold whole PCM16 samples", "audio")
        self._samples_in += len(pcm) // 2
        out.to_parley += [pcm[i:i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]

    def _commit(self, obj: dict, out: Translation) -> None:
        out.to_parley.append({"type": "input_audio.commit"})  # `committed` follows speech.stopped

    def _clear(self, obj: dict, out: Translation) -> None:
        # Audio goes to recognition as it arrives: there is no buffer left to drop.
        out.to_client.append(self._event("input_audio_buffer.cleared"))

    def _item_create(self, obj: dict, out: Translation) -> None:
        item = get_field(obj, "item", dict)
        if item.get("type") != "function_call_output":
            raise BadEvent("unsupported_item", "Parley takes function_call_output items only; "
                       "the user speaks through input_audio_buffer", "item.type")
        call_id, text = get_field(item, "call_id", str, where="item."), get_field(item, "output", str, where="item.")
        out.to_parley.append({"type": "tool.result", "call_id": call_id, "output": json_or_text(text)})
        out.to_client += self._item_events({
            "id": item["id"] if isinstance(item.get("id"), str) else self._id("item"), "object": "realtime.item",
            "type": "function_call_output", "call_id": call_id, "output": text, "status": "completed"})

    def _response_create(self, obj: dict, out: Translation) -> None:
        if self._active is None:  # else the response in progress is the one asked for
            out.to_client += self._open(None)

    def _response_cancel(self, obj: dict, out: Translation) -> None:
        out.to_parley.append({"type": "response.cancel"})
        if self._active is not None:
            if self._active.parley_id:
                self._finished.append(self._active.parley_id)  # Parley drops the rest of it too
            out.to_client += self._close("cancelled", "client_cancelled")

    # ------------------------------------------------------------ Parley → client

    def parley_event(self, event: dict) -> list[dict]:
        """One Parley server event → the Realtime events it means (often none)."""
        name = self._PARLEY.get(event.get("type"))
        return getattr(self, name)(event) if name else []

    def _started(self, event: dict) -> list[dict]:
        self.session_id = "sess_" + str(event.get("session_id"))
        self.language = event.get("language") or self.language
        kinds = ["session.created", "session.updated"] if self._early_update else ["session.created"]
        return [self._event(kind, session=self._session()) for kind in kinds]

    def _speech_started(self, event: dict) -> list[dict]:
        return [self._event("input_audio_buffer.speech_started", item_id=self._item(event),
                            audio_start_ms=self._samples_in * 1000 // RATE_HZ)]

    def _speech_stopped(self, event: dict) -> list[dict]:
        item_id = self._item(event)
        stopped = self._event("input_audio_buffer.speech_stopped", item_id=item_id,
                              audio_end_ms=self._samples_in * 1000 // RATE_HZ)
        committed = self._event("input_audio_buffer.committed", item_id=item_id, previous_item_id=self._last_item)
        return [stopped, committed, *self._item_events({
            "id": item_id, "object": "realtime.item", "type": "message", "role": "user",
            "status": "completed", "content": [{"type": "input_audio", "transcript": None}]})]

    def _partial(self, event: dict) -> list[dict]:
        # Realtime streams appended text; a Parley partial is the whole hypothesis so far.
        key, text = str(event.get("utterance_id")), str(event.get("text") or "")
        before, self._partials[key] = self._partials.get(key, ""), text
        if not text.startswith(before) or text == before:
            return []
        return [self._event("conversation.item.input_audio_transcription.delta",
                            item_id=self._item(event), content_index=0, delta=text[len(before):])]

    def _final(self, event: dict) -> list[dict]:
        self._partials.pop(str(event.get("utterance_id")), None)
        return [self._event("conversation.item.input_audio_transcription.completed", item_id=self._item(event),
                            content_index=0, transcript=str(event.get("text") or ""))]

    def _say(self, event: dict) -> list[dict]:
        """`response.text` (a sentence) or `audio.delta`, into the reply's assistant message."""
        is_text = event["type"] == "response.text"
        if parley_id(event) in self._finished or not (is_text or self.audio_out):
            return []  # late output of a finished or cancelled reply; or audio nobody asked for
        events = self._take(event)
        r = self._active
        events += self._message(r)
        if not is_text:
            return events + [self._event("response.output_audio.delta", **self._where(r),
                                         delta=event.get("audio") or "")]
        delta = (" " if r.transcript else "") + str(event.get("text") or "")
        r.transcript += delta
        kind = "response.output_audio_transcript.delta" if self.audio_out else "response.output_text.delta"
        return events + [self._event(kind, **self._where(r), delta=delta)]

    def _tool_call(self, event: dict) -> list[dict]:
        if parley_id(event) in self._finished:
            return []
        events = self._take(event)
        r = self._active
        events += self._close_message(r)
        item = {"id": self._id("item"), "object": "realtime.item", "type": "function_call",
                "status": "in_progress", "call_id": event.get("call_id"), "name": event.get("name"),
                "arguments": ""}
        r.output.append(item)
        at = {"response_id": r.id, "output_index": len(r.output) - 1}
        events += [self._event("response.output_item.added", **at, item=dict(item)),
                   self._event("conversation.item.added", item=dict(item), previous_item_id=self._last_item)]
        item.update(status="completed", arguments=json.dumps(event.get("arguments", {}), separators=(",", ":")))
        events += [self._event("response.function_call_arguments.done", **at, item_id=item["id"],
                               call_id=item["call_id"], name=item["name"], arguments=item["arguments"]),
                   self._event("response.output_item.done", **at, item=dict(item)),
                   self._event("conversation.item.done", item=dict(item))]
        self._last_item = item["id"]
        return events + self._close("completed")  # the client answers, then Parley goes on

    def _done(self, event: dict) -> list[dict]:
        pid, status = parley_id(event), _STATUS.get(event.get("status"), "incomplete")
        reason = "turn_detected" if status == "cancelled" else None  # the client's are closed already
        if pid in self._finished:
            return []
        self._finished.append(pid)
        if self._active is not None and self._active.parley_id in (pid, None):
            return self._close(status, reason)
        if self._active is None and pid not in self._seen:  # a reply that said nothing: still a response
            return self._open(pid) + self._close(status, reason)
        return []

    def _parley_error(self, event: dict) -> list[dict]:
        code = str(event.get("code") or "internal")
        return [self._error(code, str(event.get("message") or ""), kind=_ERROR_TYPES.get(code))]

    # ------------------------------------------------------------ responses and items

    def _take(self, event: dict) -> list[dict]:
        """Make `_active` the response this reply's output goes into, opened when needed."""
        pid, events = parley_id(event), []
        if self._active is not None and self._active.parley_id not in (None, pid):
            events += self._close("incomplete")  # a new reply began before the old one ended
        if self._active is None:
            events += self._open(pid)
        self._active.parley_id = pid
        if pid not in self._seen:
            self._seen.append(pid)
        return events

    def _open(self, pid: str | None) -> list[dict]:
        self._active = _Response(self._id("resp"), pid)
        return [self._event("response.created", response=self._response(self._active, "in_progress"))]

    def _close(self, status: str, reason: str | None = None) -> list[dict]:
        r, self._active = self._active, None
        details = None if status == "completed" else {"type": status, "reason": reason}
        return self._close_message(r) + [self._event("response.done", response=self._response(r, status, details))]

    def _message(self, r: _Response) -> list[dict]:
        if r.message is not None:
            return []
        r.message = {"id": self._id("item"), "object": "realtime.item", "type": "message",
                     "role": "assistant", "status": "in_progress", "content": []}
        r.output.append(r.message)
        where = self._where(r)
        return [self._event("response.output_item.added", response_id=r.id, output_index=where["output_index"],
                            item=copy_item(r.message)),
                self._event("conversation.item.added", item=copy_item(r.message), previous_item_id=self._last_item),
                self._event("response.content_part.added", **where, part=self._part(""))]

    def _close_message(self, r: _Response) -> list[dict]:
        if r.message is None:
            return []
        where, text = self._where(r), r.transcript
        if self.audio_out:
            events = [self._event("response.output_audio.done", **where),
                      self._event("response.output_audio_transcript.done", **where, transcript=text)]
            content = {"type": "output_audio", "transcript": text}
        else:
            events = [self._event("response.output_text.done", **where, text=text)]
            content = {"type": "output_text", "text": text}
        r.message.update(status="completed", content=[content])
        self._last_item, item, r.message = r.message["id"], r.message, None
        return events + [self._event("response.content_part.done", **where, part=self._part(text)),
                         self._event("response.output_item.done", response_id=r.id,
                                     output_index=where["output_index"], item=copy_item(item)),
                         self._event("conversation.item.done", item=copy_item(item))]

    def _part(self, text: str) -> dict:
        return {"type": "audio", "transcript": text} if self.audio_out else {"type": "text", "text": text}

    def _where(self, r: _Response) -> dict:
        """Where the open assistant message is: the fields of its delta events."""
        return {"response_id": r.id, "item_id": r.message["id"],
                "output_index": r.output.index(r.message), "content_index": 0}

    def _response(self, r: _Response, status: str, details: dict | None = None) -> dict:
        return {"id": r.id, "object": "realtime.response", "status": status, "status_details": details,
                "output": [copy_item(item) for item in r.output], "conversation_id": None,
                "output_modalities": self._modalities(), "audio": {"output": {"format": PCM}},
                "usage": None, "metadata": None}

    def _item_events(self, item: dict) -> list[dict]:
        previous, self._last_item = self._last_item, item["id"]
        return [self._event("conversation.item.added", item=copy_item(item), previous_item_id=previous),
                self._event("conversation.item.done", item=copy_item(item), previous_item_id=previous)]

    def _item(self, event: dict) -> str:
        return self._items.setdefault(str(event.get("utterance_id")), f"item_u{len(self._items) + 1}")

    # ------------------------------------------------------------ small things

    def _session(self) -> dict:
        return {"type": "realtime", "object": "realtime.session", "id": self.session_id, "model": self.model,
                "output_modalities": self._modalities(), "instructions": self.instructions,
                "tool_choice": "auto", "tools": [{"type": "function", **tool_fields(t)} for t in self._tools.values()],
                "audio": {"input": {"format": PCM, "transcription": {"language": self.language},
                                    "turn_detection": {"type": "server_vad"}},
                          "output": {"format": PCM}}}

    def _modalities(self) -> list[str]:
        return ["audio"] if self.audio_out else ["text"]

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids)}"

    def _event(self, kind: str, **fields: Any) -> dict:
        return {"event_id": self._id("event"), "type": kind, **fields}

    def _error(self, code: str, message: str, param: str | None = None, event_id: str | None = None,
               kind: str | None = None) -> dict:
        return self._event("error", error={"type": kind or "invalid_request_error", "code": code,
                                           "message": message, "param": param, "event_id": event_id})

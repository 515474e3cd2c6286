"""What one upstream Realtime session holds, kept on our side so it can be re-created (pure).

An OpenAI Realtime session expires (30–60 min) and a socket can drop; the conversation
must survive both. This object is told what was sent and what came back, and says which
client events rebuild the same state on a fresh session: the history as
`conversation.item.create` events (in order), then the audio in flight, then the
`response.create` whose answer was lost.

A user turn's place in the history is taken when its audio is committed, because its
transcript arrives asynchronously (often after the reply has started). Until then the
turn is replayed as its audio; once transcribed, as text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.tools.realtime import events as ev

MAX_ITEMS = 200  # older turns are dropped from the replay, never split from their outputs


@dataclass(slots=True)
class _UserTurn:
    audio: bytes
    text: str | None = None


@dataclass(slots=True)
class Conversation:
    items: list[Any] = field(default_factory=list)  # _UserTurn or a finished item dict
    uncommitted: bytearray = field(default_factory=bytearray)
    response_wanted: bool = False  # response.create sent, its response.done not yet seen
    response_id: str | None = None  # the response in progress upstream
    _partial: dict[str, str] = field(default_factory=dict)  # response id → transcript so far
    _answered: set[str] = field(default_factory=set)  # responses whose transcript is kept

    # -- what we sent ----------------------------------------------------------------------

    def appended(self, pcm_24k: bytes) -> None:
        self.uncommitted += pcm_24k

    def committed(self) -> None:
        self.items.append(_UserTurn(bytes(self.uncommitted)))
        self.uncommitted.clear()
        self._trim()

    def cleared(self) -> None:
        self.uncommitted.clear()

    def tool_output(self, call_id: str, output: str) -> None:
        self.items.append(ev.function_output_item(call_id, output))
        self._trim()

    def response_requested(self) -> None:
        self.response_wanted = True

    def response_cancelled(self) -> None:
        """Barge-in: a re-created session must not ask for the cancelled reply again."""
        self.response_wanted = False

    # -- what came back --------------------------------------------------------------------

    def observe(self, event: ev.ServerEvent | None) -> None:
        match event:
            case ev.ResponseStarted(response_id=rid):
                self.response_id = rid
            case ev.UserTranscript(text=text):
                turn = next((i for i in self.items if isinstance(i, _UserTurn) and i.text is None),
                            None)
                if turn is not None:
                    turn.text, turn.audio = text, b""
            case ev.AssistantDelta(response_id=rid, text=text):
                self._partial[rid] = self._partial.get(rid, "") + text
            case ev.AssistantDone(response_id=rid, text=text):
                self._assistant(rid, text)
            case ev.FunctionCall(call_id=call_id, name=name, arguments=arguments):
                self.items.append(ev.function_call_item(call_id, name, arguments))
            case ev.ResponseDone(response_id=rid):
                self._assistant(rid, self._partial.get(rid, ""))  # a cut-off reply's words
                self._partial.pop(rid, None)
                self._answered.discard(rid)
                self.response_wanted = False
                self.response_id = None
        self._trim()

    def _assistant(self, rid: str, text: str) -> None:
        if text and rid not in self._answered:
            self._answered.add(rid)
            self.items.append(ev.assistant_text_item(text))

    # -- rebuilding ------------------------------------------------------------------------

    def replay(self) -> list[dict[str, Any]]:
        """Client events that put a fresh session where this one was (after session.update).

        The response in progress died with the old session: it is asked for again."""
        out = [ev.create_item(_item(item)) for item in self.items]
        if self.uncommitted:
            out.append(ev.append_audio(bytes(self.uncommitted)))
        if self.response_wanted:
            out.append(ev.response_create())
        self._partial.clear()
        self.response_id = None
        return out

    def _trim(self) -> None:
        while len(self.items) > MAX_ITEMS:
            self.items.pop(0)
            # A tool output must not open the history without the call that asked for it.
            while self.items and _kind(self.items[0]) == "function_call_output":
                self.items.pop(0)


def _item(item: Any) -> dict[str, Any]:
    if isinstance(item, _UserTurn):
        return ev.user_text_item(item.text) if item.text is not None else ev.user_audio_item(item.audio)
    return item


def _kind(item: Any) -> str:
    return "user" if isinstance(item, _UserTurn) else item["type"]

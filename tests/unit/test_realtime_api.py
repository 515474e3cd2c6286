"""OpenAI Realtime ⇄ Parley translation (services/edge/realtime_api.py), and the socket
adapter that runs a Session over it (services/edge/realtime_socket.py) with a fake socket."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from websockets.exceptions import ConnectionClosedOK
from websockets.frames import Close

from services.edge.realtime_api import FRAME_BYTES, RealtimeTranslator
from services.edge.realtime_socket import RealtimeSocket

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
CLOCK = {"type": "function", "name": "get_time", "description": "Time", "parameters": {"type": "object"}}


def b64(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode()


def client(t: RealtimeTranslator, event: dict | str | bytes):
    frame = event if isinstance(event, (str, bytes)) else json.dumps(event)
    return t.client_event(frame)


def update(**session) -> dict:
    return {"type": "session.update", "session": {"type": "realtime", **session}}


def types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def started(**session) -> RealtimeTranslator:
    """A translator whose session has started (after one early session.update, if given)."""
    t = RealtimeTranslator()
    if session:
        client(t, update(**session))
    t.start()
    t.parley_event({"type": "session.started", "session_id": "abc", "language": t.language})
    return t


# ------------------------------------------------------------------ starting

def test_early_updates_fold_into_the_implicit_start():
    t = RealtimeTranslator("gpt-realtime")
    out = client(t, update(instructions="Be brief.", tools=[WEATHER],
                           audio={"input": {"transcription": {"language": "es-MX"}}}))
    assert out.to_parley == [] and out.to_client == [] and not t.started
    out = client(t, {"type": "input_audio_buffer.commit"})  # any other event starts the session
    start, *rest = out.to_parley
    assert start == {"type": "session.start", "mode": "assistant", "language": "es",
                     "input_sample_rate": 24000, "output_sample_rate": 24000,
                     "instructions": "Be brief.",
                     "tools": [{k: WEATHER[k] for k in ("name", "description", "parameters")}]}
    assert rest == [{"type": "input_audio.commit"}]
    events = t.parley_event({"type": "session.started", "session_id": "abc", "language": "es"})
    assert types(events) == ["session.created", "session.updated"]
    session = events[0]["session"]
    assert session["id"] == "sess_abc" and session["model"] == "gpt-realtime"
    assert session["instructions"] == "Be brief." and session["tools"] == [WEATHER]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["transcription"]["language"] == "es"


def test_a_quiet_client_gets_a_default_start():
    t = RealtimeTranslator()
    (start,) = t.start().to_parley
    assert start["language"] == "en" and start["tools"] == [] and "instructions" not in start
    assert types(t.parley_event({"type": "session.started", "session_id": "s"})) == ["session.created"]


def test_later_updates_register_the_difference_of_tools():
    t = started(tools=[WEATHER])
    changed = {**WEATHER, "description": "Weather now"}
    out = client(t, update(tools=[changed, CLOCK]))
    assert out.to_parley == [
        {"type": "tool.register", "name": "get_weather", "description": "Weather now",
         "parameters": WEATHER["parameters"]},
        {"type": "tool.register", "name": "get_time", "description": "Time", "parameters": {"type": "object"}},
    ]
    assert types(out.to_client) == ["session.updated"]
    out = client(t, update(tools=[CLOCK]))
    assert out.to_parley == [{"type": "tool.unregister", "name": "get_weather"}]
    assert client(t, update(tools=[CLOCK])).to_parley == []  # nothing changed
    assert client(t, update(instructions="x")).to_parley == []  # tools absent: kept


def test_instructions_and_language_cannot_change_after_the_start():
    t = started(instructions="Be brief.")
    out = client(t, update(instructions="Be long.", tools=[CLOCK]))
    assert types(out.to_client) == ["session.updated", "error"]
    assert out.to_client[0]["session"]["instructions"] == "Be brief."
    assert out.to_client[1]["error"]["code"] == "unsupported_update"
    assert out.to_parley[0]["name"] == "get_time"  # what can change, did
    same = client(t, update(instructions="Be brief.", audio={"input": {"transcription": {"language": "en"}}}))
    assert types(same.to_client) == ["session.updated"]


BAD_UPDATES = [
    (update(tools=[{"type": "mcp", "server_url": "x"}]), "session.tools[0]"),
    (update(tools=[{**WEATHER, "name": "no spaces"}]), "session.tools[0]"),
    (update(tools=[WEATHER, WEATHER]), "session.tools[1]"),
    (update(tools={"a": 1}), "session.tools"),
    (update(audio={"input": {"format": {"type": "audio/pcmu"}}}), "session.audio.input.format"),
    (update(audio={"output": {"format": {"type": "audio/pcm", "rate": 16000}}}), "session.audio.output.format"),
    (update(output_modalities=["audio", "text"]), "session.output_modalities"),
    (update(audio={"input": {"transcription": {"language": "english!"}}}),
     "session.audio.input.transcription.language"),
    ({"type": "session.update"}, "session"),
]


@pytest.mark.parametrize("event,param", BAD_UPDATES, ids=range(len(BAD_UPDATES)))
def test_bad_updates_change_nothing(event, param):
    t = started(tools=[WEATHER])
    out = client(t, {**event, "event_id": "evt_9"})
    assert out.to_parley == [] and types(out.to_client) == ["error"]
    error = out.to_client[0]["error"]
    assert error["param"] == param and error["event_id"] == "evt_9" and error["type"] == "invalid_request_error"
    assert client(t, update()).to_client[0]["session"]["tools"] == [WEATHER]


# ------------------------------------------------------------------ client events

def test_audio_is_decoded_and_cut_into_frames_of_one_second():
    t = started()
    pcm = bytes(range(256)) * (FRAME_BYTES * 2 // 256 + 1)  # a bit over 2 s
    out = client(t, {"type": "input_audio_buffer.append", "audio": b64(pcm)})
    assert [len(f) for f in out.to_parley] == [FRAME_BYTES, FRAME_BYTES, len(pcm) - 2 * FRAME_BYTES]
    assert b"".join(out.to_parley) == pcm and out.to_client == []


@pytest.mark.parametrize("event,code", [
    ({"type": "input_audio_buffer.append", "audio": "!!!"}, "invalid_value"),
    ({"type": "input_audio_buffer.append", "audio": b64(b"\x01")}, "invalid_value"),
    ({"type": "input_audio_buffer.append", "audio": ""}, "invalid_value"),
    ({"type": "input_audio_buffer.append"}, "missing_required_parameter"),
    ({"type": "input_audio_buffer.append", "audio": 7}, "invalid_type"),
    ("not json", "invalid_json"),
    ("[1]", "invalid_value"),
    ({"type": 3}, "invalid_value"),
    ({"type": "no.such.event"}, "invalid_value"),
    ({"type": "conversation.item.truncate", "item_id": "x"}, "unsupported_event"),
    ({"type": "conversation.item.create", "item": {"type": "message", "role": "user"}}, "unsupported_item"),
    ({"type": "conversation.item.create", "item": {"type": "function_call_output", "output": "1"}},
     "missing_required_parameter"),
    ({"type": "conversation.item.create"}, "missing_required_parameter"),
    (b"\x00\x00", "invalid_value"),
])
def test_malformed_events_get_an_error_and_send_nothing(event, code):
    t = started()
    out = client(t, event)
    assert out.to_parley == [] and types(out.to_client) == ["error"]
    assert out.to_client[0]["error"]["code"] == code and out.to_client[0]["event_id"]


def test_a_malformed_first_event_does_not_start_the_session():
    t = RealtimeTranslator()
    assert types(client(t, "nope").to_client) == ["error"] and not t.started


def test_commit_and_clear():
    t = started()
    out = client(t, {"type": "input_audio_buffer.commit"})
    assert out.to_parley == [{"type": "input_audio.commit"}] and out.to_client == []  # committed: see speech
    out = client(t, {"type": "input_audio_buffer.clear"})
    assert out.to_parley == [] and types(out.to_client) == ["input_audio_buffer.cleared"]


@pytest.mark.parametrize("text,value", [
    ('{"temp": 21}', {"temp": 21}), ("[1, 2]", [1, 2]), ("sunny", "sunny"), ("", ""),
    ("NaN", "NaN"), ('"quoted"', "quoted"), ("null", None),
])
def test_function_output_becomes_a_tool_result(text, value):
    t = started()
    item = {"type": "function_call_output", "call_id": "call_1", "output": text}
    out = client(t, {"type": "conversation.item.create", "item": item})
    assert out.to_parley == [{"type": "tool.result", "call_id": "call_1", "output": value}]
    assert types(out.to_client) == ["conversation.item.added", "conversation.item.done"]
    assert out.to_client[0]["item"]["output"] == text and out.to_client[0]["item"]["call_id"] == "call_1"


# ------------------------------------------------------------------ Parley events

def test_speech_becomes_a_committed_user_item_and_its_transcript():
    t = started()
    client(t, {"type": "input_audio_buffer.append", "audio": b64(b"\x00\x00" * 12000)})
    u = {"utterance_id": "u1"}
    (s,) = t.parley_event({"type": "speech.started", **u})
    assert s["type"] == "input_audio_buffer.speech_started" and s["audio_start_ms"] == 500
    stopped = t.parley_event({"type": "speech.stopped", **u})
    assert types(stopped) == ["input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
                              "conversation.item.added", "conversation.item.done"]
    assert {e.get("item_id", e.get("item", {}).get("id")) for e in stopped} == {s["item_id"]}
    deltas = [t.parley_event({"type": "transcript.partial", **u, "text": text})
              for text in ("i would", "i would like", "i would like", "you would")]
    assert [[e["delta"] for e in d] for d in deltas] == [["i would"], [" like"], [], []]
    (final,) = t.parley_event({"type": "transcript.final", **u, "language": "en", "text": "i would like tea"})
    assert final["type"] == "conversation.item.input_audio_transcription.completed"
    assert final["item_id"] == s["item_id"] and final["transcript"] == "i would like tea"


def test_a_turn_with_a_function_call_is_two_responses():
    t = started(tools=[WEATHER])
    created = client(t, {"type": "response.create"}).to_client
    assert types(created) == ["response.created"]
    assert client(t, {"type": "response.create"}).to_client == []  # one is in progress already
    r = {"response_id": "r1"}
    first = t.parley_event({"type": "response.text", **r, "text": "Let me check."})
    first += t.parley_event({"type": "audio.delta", **r, "audio": "AAAA"})
    first += t.parley_event({"type": "tool.call", **r, "call_id": "call_1", "name": "get_weather",
                             "arguments": {"city": "Paris"}})
    assert types(first) == [
        "response.output_item.added", "conversation.item.added", "response.content_part.added",
        "response.output_audio_transcript.delta", "response.output_audio.delta",
        "response.output_audio.done", "response.output_audio_transcript.done",
        "response.content_part.done", "response.output_item.done", "conversation.item.done",
        "response.output_item.added", "conversation.item.added",
        "response.function_call_arguments.done", "response.output_item.done", "conversation.item.done",
        "response.done"]
    rid = created[0]["response"]["id"]
    assert all(e["response_id"] == rid for e in first if "response_id" in e)
    args = next(e for e in first if e["type"] == "response.function_call_arguments.done")
    assert (args["call_id"], args["name"], json.loads(args["arguments"])) == ("call_1", "get_weather", {"city": "Paris"})
    assert args["output_index"] == 1 and isinstance(args["arguments"], str)
    done = first[-1]["response"]
    assert done["status"] == "completed" and [i["type"] for i in done["output"]] == ["message", "function_call"]
    assert done["output"][0]["content"] == [{"type": "output_audio", "transcript": "Let me check."}]

    answer = {"type": "function_call_output", "call_id": "call_1", "output": '{"temp": 21}'}
    assert client(t, {"type": "conversation.item.create", "item": answer}).to_parley[0]["type"] == "tool.result"
    second = client(t, {"type": "response.create"}).to_client
    second += t.parley_event({"type": "response.text", **r, "text": "It is 21 degrees."})
    second += t.parley_event({"type": "response.text", **r, "text": "Enjoy."})
    second += t.parley_event({"type": "audio.delta", **r, "audio": "BBBB"})
    second += t.parley_event({"type": "audio.done", **r})
    second += t.parley_event({"type": "response.done", **r, "status": "completed", "text": "…"})
    assert types(second)[0] == "response.created" and types(second)[-1] == "response.done"
    assert second[0]["response"]["id"] != rid
    done = second[-1]["response"]
    assert done["status"] == "completed" and done["output"][0]["content"][0]["transcript"] == "It is 21 degrees. Enjoy."
    assert types(second).count("response.output_audio.done") == 1
    assert t.parley_event({"type": "audio.delta", **r, "audio": "CCCC"}) == []  # late: dropped
    ids = [e["event_id"] for e in created + first + second]
    assert len(set(ids)) == len(ids)


def test_output_without_response_create_opens_a_response():
    t = started()
    events = t.parley_event({"type": "audio.delta", "response_id": "r1", "audio": "AAAA"})
    assert types(events)[0] == "response.created" and events[0]["response"]["status"] == "in_progress"
    events = t.parley_event({"type": "audio.delta", "response_id": "r2", "audio": "AAAA"})
    assert types(events)[:6] == ["response.output_audio.done", "response.output_audio_transcript.done",
                                 "response.content_part.done", "response.output_item.done",
                                 "conversation.item.done", "response.done"]
    assert events[5]["response"]["status"] == "incomplete" and "response.created" in types(events)


@pytest.mark.parametrize("status,realtime,reason", [
    ("completed", "completed", None), ("cancelled", "cancelled", "turn_detected"),
    ("failed", "failed", None), ("step_limit", "incomplete", None), ("weird", "incomplete", None),
])
def test_a_reply_that_said_nothing_is_still_a_response(status, realtime, reason):
    t = started()
    events = t.parley_event({"type": "response.done", "response_id": "r1", "status": status, "text": ""})
    assert types(events) == ["response.created", "response.done"]
    response = events[1]["response"]
    assert response["status"] == realtime and response["output"] == []
    assert response["status_details"] == (None if realtime == "completed" else {"type": realtime, "reason": reason})
    assert t.parley_event({"type": "response.done", "response_id": "r1", "status": status}) == []


def test_cancel_ends_the_response_at_once_and_drops_the_rest_of_the_reply():
    t = started()
    t.parley_event({"type": "response.text", "response_id": "r1", "text": "A long story"})
    out = client(t, {"type": "response.cancel"})
    assert out.to_parley == [{"type": "response.cancel"}]
    done = out.to_client[-1]
    assert done["type"] == "response.done" and done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "client_cancelled"
    assert t.parley_event({"type": "audio.delta", "response_id": "r1", "audio": "AAAA"}) == []
    assert t.parley_event({"type": "response.done", "response_id": "r1", "status": "cancelled"}) == []
    assert client(t, {"type": "response.cancel"}).to_client == []  # nothing in progress


def test_cancel_of_a_response_nothing_filled_yet():
    t = started()
    client(t, {"type": "response.create"})
    out = client(t, {"type": "response.cancel"})
    assert types(out.to_client) == ["response.done"] and out.to_client[0]["response"]["status"] == "cancelled"


def test_text_modality_sends_text_and_no_audio():
    t = started(output_modalities=["text"])
    events = t.parley_event({"type": "response.text", "response_id": "r1", "text": "Hi."})
    assert t.parley_event({"type": "audio.delta", "response_id": "r1", "audio": "AAAA"}) == []
    events += t.parley_event({"type": "response.done", "response_id": "r1", "status": "completed"})
    assert "response.output_text.delta" in types(events) and "response.output_text.done" in types(events)
    assert not any("audio" in kind for kind in types(events))
    assert events[-1]["response"]["output"][0]["content"] == [{"type": "output_text", "text": "Hi."}]


def test_parley_errors_and_events_without_a_counterpart():
    t = started()
    (error,) = t.parley_event({"type": "error", "code": "invalid_audio", "message": "odd", "fatal": False})
    assert error["error"] == {"type": "invalid_request_error", "code": "invalid_audio", "message": "odd",
                              "param": None, "event_id": None}
    (error,) = t.parley_event({"type": "error", "code": "provider_unavailable", "message": "x", "fatal": True})
    assert error["error"]["type"] == "server_error"
    for kind in ("usage", "warning", "pong", "session.ended", "translation", "audio.done", "nonsense"):
        assert t.parley_event({"type": kind, "seq": 3}) == []


# ------------------------------------------------------------------ the socket adapter

class FakeWs:
    """The real client socket: frames the client sends, events it received."""

    def __init__(self, *frames: str) -> None:
        self.incoming: asyncio.Queue = asyncio.Queue()
        for frame in frames:
            self.incoming.put_nowait(frame)
        self.sent: list[dict] = []
        self.closed_with = None

    def hang_up(self) -> None:
        self.incoming.put_nowait(None)

    async def recv(self):
        frame = await self.incoming.get()
        if frame is None:
            self.incoming.put_nowait(None)
            raise ConnectionClosedOK(Close(1000, ""), Close(1000, ""), True)
        return frame

    async def send(self, text: str) -> None:
        if self.closed_with:
            raise ConnectionClosedOK(Close(1000, ""), Close(1000, ""), True)
        self.sent.append(json.loads(text))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed_with = (code, reason)


async def test_socket_starts_after_the_early_updates_and_keeps_the_order():
    ws = FakeWs(json.dumps(update(tools=[WEATHER])),
                json.dumps({"type": "input_audio_buffer.append", "audio": b64(b"\x01\x00" * 10)}))
    sock = RealtimeSocket(ws, RealtimeTranslator(), start_grace_s=5)
    start = json.loads(await sock.recv())
    assert start["type"] == "session.start" and start["tools"][0]["name"] == "get_weather"
    assert await sock.recv() == b"\x01\x00" * 10
    await sock.send(json.dumps({"type": "session.started", "session_id": "abc", "seq": None}))
    assert types(ws.sent) == ["session.created", "session.updated"]


async def test_socket_starts_a_quiet_client_after_the_grace_period():
    ws = FakeWs()
    sock = RealtimeSocket(ws, RealtimeTranslator(), start_grace_s=0.01)
    assert json.loads(await sock.recv())["type"] == "session.start"


async def test_socket_turns_a_departure_into_the_end_of_the_session():
    ws = FakeWs(json.dumps({"type": "input_audio_buffer.commit"}), "oops")
    sock = RealtimeSocket(ws, RealtimeTranslator())
    frames = []
    ws.hang_up()
    async for frame in sock:  # stops at the close, as a websockets connection does
        frames.append(json.loads(frame)["type"])
    assert frames == ["session.start", "input_audio.commit", "session.end"]
    assert types(ws.sent) == ["error"]  # "oops" is not JSON
    ws.closed_with = (1000, "")
    await sock.send(json.dumps({"type": "session.ended", "reason": "client_ended"}))  # dropped, no raise


async def test_socket_before_the_start_a_departure_is_just_closed():
    ws = FakeWs()
    ws.hang_up()
    with pytest.raises(ConnectionClosedOK):
        await RealtimeSocket(ws, RealtimeTranslator(), start_grace_s=5).recv()

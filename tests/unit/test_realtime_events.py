"""OpenAI Realtime wire events (pure): builders, the server-event parser, the replay record.

Server payloads are shaped like the vendor's API reference (GA event names and fields)."""

from __future__ import annotations

import base64

import pytest

from services.tools.realtime import events as ev
from services.tools.realtime.conversation import MAX_ITEMS, Conversation
from shared.errors import ProviderBadResponse

PCM = bytes(range(256)) * 4  # 1024 bytes


def test_session_update_is_the_ga_shape():
    tool = ev.tool_definition("lookup", "Find a thing", {"type": "object", "properties": {}})
    event = ev.session_update("Be kind.", [tool], language="de", voice="cedar")
    session = event["session"]
    assert event["type"] == "session.update" and session["type"] == "realtime"
    assert session["tools"] == [{"type": "function", "name": "lookup", "description": "Find a thing",
                                 "parameters": {"type": "object", "properties": {}}}]
    assert session["audio"]["input"]["turn_detection"] is None
    assert session["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe",
                                                          "language": "de"}
    assert session["audio"]["output"]["voice"] == "cedar"
    assert session["audio"]["input"]["format"] == session["audio"]["output"]["format"] == \
        {"type": "audio/pcm", "rate": 24000}


def test_a_voice_of_another_engine_is_not_sent():
    session = ev.session_update("x", [], voice="en-us")["session"]
    assert "voice" not in session["audio"]["output"]
    assert "language" not in session["audio"]["input"]["transcription"]


def test_client_events():
    assert ev.append_audio(PCM) == {"type": "input_audio_buffer.append",
                                    "audio": base64.b64encode(PCM).decode()}
    assert ev.commit_audio() == {"type": "input_audio_buffer.commit"}
    assert ev.response_create() == {"type": "response.create"}
    assert ev.response_cancel() == {"type": "response.cancel"}
    assert ev.response_cancel("resp_1") == {"type": "response.cancel", "response_id": "resp_1"}
    assert ev.function_call_output("call_1", '{"ok": true}') == {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": "call_1", "output": '{"ok": true}'}}


AUDIO_DELTA = {"event_id": "event_3", "type": "response.output_audio.delta", "response_id": "resp_1",
               "item_id": "item_1", "output_index": 0, "content_index": 0,
               "delta": base64.b64encode(PCM).decode()}
ARGS_DONE = {"event_id": "event_9", "type": "response.function_call_arguments.done",
             "response_id": "resp_2", "item_id": "item_2", "output_index": 0,
             "call_id": "call_abc", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}
TRANSCRIBED = {"event_id": "event_5", "type": "conversation.item.input_audio_transcription.completed",
               "item_id": "item_0", "content_index": 0, "transcript": "Hello, how are you?",
               "usage": {"type": "duration", "seconds": 2}}
CANCELLED = {"event_id": "event_7", "type": "response.done", "response": {
    "object": "realtime.response", "id": "resp_1", "status": "cancelled",
    "status_details": {"type": "cancelled", "reason": "client_cancelled"}, "output": []}}
FAILED = {"event_id": "event_8", "type": "response.done", "response": {
    "object": "realtime.response", "id": "resp_4", "status": "failed",
    "status_details": {"type": "failed", "error": {"type": "server_error", "code": "server_error",
                                                   "message": "boom"}}}}
EXPIRED = {"type": "error", "event_id": "event_x", "error": {
    "type": "invalid_request_error", "code": "session_expired",
    "message": "Your session hit the maximum duration of 60 minutes.", "param": None,
    "event_id": None}}


@pytest.mark.parametrize("payload, expected", [
    (AUDIO_DELTA, ev.AudioOut("resp_1", PCM)),
    ({"type": "response.output_audio_transcript.delta", "event_id": "e", "response_id": "resp_1",
      "item_id": "i", "output_index": 0, "content_index": 0, "delta": "Hel"},
     ev.AssistantDelta("resp_1", "Hel")),
    ({"type": "response.output_audio_transcript.done", "event_id": "e", "response_id": "resp_1",
      "item_id": "i", "output_index": 0, "content_index": 0, "transcript": "Hello."},
     ev.AssistantDone("resp_1", "Hello.")),
    (TRANSCRIBED, ev.UserTranscript("item_0", "Hello, how are you?")),
    (ARGS_DONE, ev.FunctionCall("resp_2", "call_abc", "get_weather", "{\"city\":\"Paris\"}")),
    ({"type": "response.created", "event_id": "e", "response": {"id": "resp_9", "status": "in_progress"}},
     ev.ResponseStarted("resp_9")),
    (CANCELLED, ev.ResponseDone("resp_1", "cancelled", "client_cancelled")),
    (FAILED, ev.ResponseDone("resp_4", "failed", "server_error")),
    (EXPIRED, ev.ServerError("session_expired",
                             "Your session hit the maximum duration of 60 minutes.",
                             "invalid_request_error")),
    ({"type": "session.created", "event_id": "e", "session": {"id": "sess_1"}}, ev.SessionCreated("sess_1")),
    ({"type": "rate_limits.updated", "event_id": "e", "rate_limits": []}, None),
    ({"type": "input_audio_buffer.committed", "event_id": "e", "item_id": "i"}, None),
])
def test_server_events(payload, expected):
    assert ev.parse_server_event(payload) == expected


@pytest.mark.parametrize("payload", [
    {"no": "type"},
    [],
    {**AUDIO_DELTA, "delta": "not base64!"},
    {**AUDIO_DELTA, "delta": base64.b64encode(b"abc").decode()},  # odd PCM16 byte count
    {**ARGS_DONE, "arguments": {"city": "Paris"}},  # must be JSON text
    {"type": "response.done", "response": {"status": "completed"}},
])
def test_off_shape_events_are_bad_responses(payload):
    with pytest.raises(ProviderBadResponse):
        ev.parse_server_event(payload)


def items(conversation: Conversation) -> list[dict]:
    return [event["item"] for event in conversation.replay() if event["type"] == "conversation.item.create"]


def test_the_record_replays_turns_in_order_with_late_transcripts():
    c = Conversation()
    c.appended(PCM)
    c.committed()
    c.response_requested()
    c.observe(ev.ResponseStarted("r1"))
    c.observe(ev.FunctionCall("r1", "call_1", "lookup", "{}"))
    c.observe(ev.UserTranscript("item_0", "find it"))  # after the reply started: kept in place
    c.observe(ev.ResponseDone("r1", "completed"))
    c.tool_output("call_1", '"found"')
    c.response_requested()
    c.observe(ev.ResponseStarted("r2"))
    c.observe(ev.AssistantDone("r2", "It is found."))
    c.observe(ev.ResponseDone("r2", "completed"))
    assert items(c) == [ev.user_text_item("find it"), ev.function_call_item("call_1", "lookup", "{}"),
                        ev.function_output_item("call_1", '"found"'),
                        ev.assistant_text_item("It is found.")]
    assert [e["type"] for e in c.replay()][-1] == "conversation.item.create"  # no response.create


def test_the_record_replays_untranscribed_audio_pending_input_and_the_lost_reply():
    c = Conversation()
    c.appended(PCM)
    c.committed()
    c.response_requested()
    c.observe(ev.ResponseStarted("r1"))
    c.observe(ev.AssistantDelta("r1", "Half a"))
    c.appended(PCM[:100])
    replay = c.replay()
    assert [e["type"] for e in replay] == ["conversation.item.create", "input_audio_buffer.append",
                                           "response.create"]
    assert replay[0]["item"] == ev.user_audio_item(PCM)
    assert base64.b64decode(replay[1]["audio"]) == PCM[:100]


def test_a_cut_off_reply_keeps_its_words_and_a_cancel_is_not_asked_again():
    c = Conversation()
    c.response_requested()
    c.observe(ev.ResponseStarted("r1"))
    c.response_cancelled()
    assert "response.create" not in [e["type"] for e in c.replay()]
    c.observe(ev.ResponseStarted("r2"))
    c.observe(ev.AssistantDelta("r2", "Well, "))
    c.observe(ev.AssistantDelta("r2", "the"))
    c.observe(ev.ResponseDone("r2", "cancelled"))
    assert items(c) == [ev.assistant_text_item("Well, the")]


def test_the_record_is_bounded_and_never_opens_with_an_orphan_output():
    c = Conversation()
    for n in range(MAX_ITEMS):
        c.observe(ev.FunctionCall("r", f"c{n}", "f", "{}"))
        c.tool_output(f"c{n}", "1")
    assert len(c.items) <= MAX_ITEMS
    assert c.items[0]["type"] == "function_call"

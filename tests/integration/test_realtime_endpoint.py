"""/v1/realtime with the official `openai` SDK: a Realtime application runs on Parley by
changing its base URL. Real edge, NATS and workers as processes; the benchmark STT/TTS
engines and a fake OpenAI chat-completions server as the assistant's model."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest
from openai import AsyncOpenAI

from shared.audio import resample
from tests.fakes.openai_server import FakeOpenAI
from tests.speech import synthesize_speech
from tests.support.client import ProtocolClient
from tests.support.system import ParleySystem

DOOR_TOOL = {
    "type": "function", "name": "open_door", "description": "Open or close the door",
    "parameters": {"type": "object", "properties": {"action": {"type": "string", "enum": ["open", "close"]}},
                   "required": ["action"]},
}
CHUNK_BYTES = 2 * 2400  # 100 ms at 24 kHz


@pytest.fixture(scope="module")
def model():
    with FakeOpenAI(api_key="sk-realtime") as fake:
        yield fake


@pytest.fixture(scope="module")
def realtime_system(model, nats_server, tmp_path_factory):
    system = ParleySystem(nats_server.url, None, "bench", tmp_path_factory.mktemp("realtime-logs"), env={
        "PARLEY_PREFIX": "rtapi", "OPENAI_API_KEY": "sk-realtime", "OPENAI_BASE_URL": model.url,
        "PARLEY_LLM_CHAIN": "openai:gpt-4.1-nano",
    })
    system.start_all()
    yield system
    codes = system.stop_all()
    assert all(code == 0 for code in codes.values()), codes


@pytest.fixture(scope="module")
def speech_24k() -> bytes:
    return resample(synthesize_speech("please open the door", sample_rate=16000), 16000, 24000)


async def until(conn, kind: str, seen: list, timeout: float = 30.0):
    """Receive (and keep) events until one of type `kind` arrives; return it."""
    deadline = time.monotonic() + timeout
    while True:
        event = await asyncio.wait_for(conn.recv(), max(0.1, deadline - time.monotonic()))
        seen.append(event)
        if event.type == "error":
            raise AssertionError(f"error event: {event.error}")
        if event.type == kind:
            return event


async def test_sdk_turn_with_a_function_call(realtime_system, model, speech_24k):
    model.knobs.reset()
    model.knobs.set(tool_calls=({"name": "open_door", "arguments": {"action": "open"}},),
                    after_tool_text="The door is open now.")
    client = AsyncOpenAI(base_url=realtime_system.url() + "/v1", api_key="sk-anything")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={
            "type": "realtime", "instructions": "Be brief.", "output_modalities": ["audio"],
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                "transcription": {"language": "en"}},
                      "output": {"format": {"type": "audio/pcm", "rate": 24000}}},
            "tools": [DOOR_TOOL]})
        for i in range(0, len(speech_24k), CHUNK_BYTES):
            await conn.input_audio_buffer.append(audio=base64.b64encode(speech_24k[i:i + CHUNK_BYTES]).decode())
        await conn.input_audio_buffer.commit()
        await conn.response.create()

        first: list = []
        call = await until(conn, "response.function_call_arguments.done", first)
        kinds = [e.type for e in first]
        assert kinds[:2] == ["session.created", "session.updated"]
        assert first[1].session.tools[0].name == "open_door"
        assert kinds.index("input_audio_buffer.speech_started") < kinds.index("input_audio_buffer.committed")
        assert kinds.index("response.created") < kinds.index("response.output_item.added")
        assert call.name == "open_door" and json.loads(call.arguments) == {"action": "open"}
        done = await until(conn, "response.done", first)
        assert done.response.status == "completed" and done.response.output[-1].type == "function_call"

        await conn.conversation.item.create(item={"type": "function_call_output", "call_id": call.call_id,
                                                  "output": json.dumps({"door": "open"})})
        await conn.response.create()
        second: list = []
        done = await until(conn, "response.done", second)
        kinds = [e.type for e in second]
        assert "conversation.item.added" in kinds and "response.created" in kinds
        assert done.response.status == "completed"
        audio = b"".join(base64.b64decode(e.delta) for e in second if e.type == "response.output_audio.delta")
        assert len(audio) == 2 * 12000  # one sentence: 500 ms of the bench tone at 24 kHz
        transcript = "".join(e.delta for e in second if e.type == "response.output_audio_transcript.delta")
        assert transcript == "The door is open now." == done.response.output[0].content[0].transcript
        ids = [e.event_id for e in first + second]
        assert len(set(ids)) == len(ids)

    chats = [r.json for r in model.requests if r.path.endswith("/chat/completions")]
    assert chats[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert [t["function"]["name"] for t in chats[0]["tools"]] == ["open_door"]
    assert json.loads(chats[-1]["messages"][-1]["content"]) == {"door": "open"}
    realtime_system.check_alive()


BAD_EVENTS = [
    ("not json", "invalid_json"),
    (json.dumps({"type": "no.such.event"}), "invalid_value"),
    (json.dumps({"type": "input_audio_buffer.append", "audio": "!!!"}), "invalid_value"),
    (json.dumps({"type": "conversation.item.truncate", "item_id": "x", "content_index": 0,
                 "audio_end_ms": 0}), "unsupported_event"),
    (json.dumps({"type": "session.update", "session": {"tools": [{"type": "mcp"}]}}), "invalid_value"),
    (json.dumps({"type": "conversation.item.create", "item": {"type": "function_call_output"}}),
     "missing_required_parameter"),
]


async def test_malformed_events_get_errors_and_the_connection_stays_usable(realtime_system):
    url = realtime_system.url().replace("http", "ws") + "/v1/realtime?model=gpt-realtime"
    client = await ProtocolClient.connect(url, additional_headers={"Authorization": "Bearer sk-x"})
    created = await client.wait_type("session.created")  # a quiet client gets its session anyway
    assert created["session"]["model"] == "gpt-realtime" and created["session"]["id"].startswith("sess_")
    for frame, code in BAD_EVENTS:
        await client.ws.send(frame)
        error = await client.wait_for(lambda e: e.get("type") == "error" and e["error"]["code"] == code)
        assert error["event_id"] and error["error"]["type"] == "invalid_request_error"
    await client.send({"type": "session.update", "event_id": "evt_ok", "session": {"tools": [DOOR_TOOL]}})
    updated = await client.wait_type("session.updated")
    assert updated["session"]["tools"][0]["name"] == "open_door"
    await client.send({"type": "input_audio_buffer.clear"})
    await client.wait_type("input_audio_buffer.cleared")
    assert not client.closed.done()
    await client.close()
    realtime_system.check_alive()

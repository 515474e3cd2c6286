"""Assistant mode end to end on a real NATS: edge, STT, tools and TTS workers as processes,
the benchmark STT/TTS engines, and a fake OpenAI chat-completions server as the model."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from shared.audio import tone
from shared.messages import decode
from shared.subjects import Subjects
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.webhook_receiver import ORDER, SECRET, FakeReceiver
from tests.support.client import ProtocolClient
from tests.support.system import ParleySystem

UTTERANCE = tone(220, 1.0, 16000) + b"\x00\x00" * 8000
COLOR_TOOL = {
    "name": "set_color", "description": "Change the page colour",
    "parameters": {"type": "object", "properties": {"color": {"type": "string", "enum": ["red", "blue"]}},
                   "required": ["color"]},
}


@pytest.fixture(scope="module")
def model():
    with FakeOpenAI(api_key="sk-assistant") as fake:
        yield fake


@pytest.fixture(scope="module")
def receiver():
    with FakeReceiver() as server:
        yield server


@pytest.fixture(scope="module")
def assistant_system(model, receiver, nats_server, tmp_path_factory):
    logs = tmp_path_factory.mktemp("assistant-logs")
    config = logs / "parley.toml"
    config.write_text(f"""
[[tools.webhook]]
name = "order_status"
description = "Where an order is"
url = "{receiver.url}"
secret = "ORDER_HOOK_SECRET"
timeout_ms = 2000
parameters = '{json.dumps(ORDER)}'
""")
    system = ParleySystem(nats_server.url, None, "bench", logs, env={
        "PARLEY_PREFIX": "asst", "OPENAI_API_KEY": "sk-assistant", "OPENAI_BASE_URL": model.url,
        "PARLEY_LLM_CHAIN": "openai:gpt-4.1-nano", "PARLEY_BENCH_TTS_DELAY_MS": "100",
        "PARLEY_RESUME_WINDOW_S": "30", "PARLEY_CONFIG": str(config), "ORDER_HOOK_SECRET": SECRET,
    })
    system.start_all()
    yield system
    codes = system.stop_all()
    assert all(code == 0 for code in codes.values()), codes


@pytest.fixture
def fresh_model(model):
    model.knobs.reset()
    model.clear_log()
    return model


async def assistant(system, *tools, **fields) -> ProtocolClient:
    client = await ProtocolClient.connect(system.ws_url())
    reply = await client.start(mode="assistant", language="en", instructions="Be brief.",
                               tools=list(tools), **fields)
    assert reply["type"] == "session.started" and reply["mode"] == "assistant", reply
    return client


def chat_requests(model) -> list[dict]:
    return [r.json for r in model.requests if r.path.endswith("/chat/completions")]


async def test_spoken_request_tool_call_result_and_spoken_reply(assistant_system, fresh_model):
    fresh_model.knobs.set(tool_calls=({"name": "set_color", "arguments": {"color": "blue"}},),
                          after_tool_text="Done. The page is blue now.")
    client = await assistant(assistant_system, COLOR_TOOL)
    await client.stream(UTTERANCE, realtime=False)
    call = await client.wait_type("tool.call")
    assert call["name"] == "set_color" and call["arguments"] == {"color": "blue"}
    await client.send({"type": "tool.result", "call_id": call["call_id"], "output": {"ok": True, "color": "blue"}})
    done = await client.wait_type("response.done")
    assert done["status"] == "completed" and done["text"] == "Done. The page is blue now."
    texts = [e["text"] for e in client.of_type("response.text")]
    assert texts == ["Done.", "The page is blue now."]  # sentence by sentence
    audio = client.of_type("audio.delta")
    assert audio and all(e["response_id"] == done["response_id"] for e in audio)
    assert client.of_type("audio.done")[-1]["response_id"] == done["response_id"]
    assert len(client.audio()) == 2 * 2 * 8000  # two sentences of 500 ms at 16 kHz
    first, second = chat_requests(fresh_model)
    assert first["messages"][0] == {"role": "system", "content": "Be brief."}
    assert first["messages"][-1] == {"role": "user", "content": "utterance 1"}
    assert [t["function"]["name"] for t in first["tools"]] == ["order_status", "set_color"]
    result = second["messages"][-1]
    assert result["role"] == "tool" and result["tool_call_id"] == call["call_id"]
    assert json.loads(result["content"]) == {"ok": True, "color": "blue"}
    await client.close()


async def test_a_client_that_never_answers_times_out_and_the_talk_goes_on(assistant_system, fresh_model):
    fresh_model.knobs.set(tool_calls=({"name": "set_color", "arguments": {"color": "red"}},),
                          after_tool_text="Sorry, that did not work.")
    client = await assistant(assistant_system, {**COLOR_TOOL, "timeout_ms": 500})
    await client.stream(UTTERANCE, realtime=False)
    await client.wait_type("tool.call")
    done = await client.wait_type("response.done")
    assert done["status"] == "completed" and done["text"] == "Sorry, that did not work."
    error = json.loads(chat_requests(fresh_model)[-1]["messages"][-1]["content"])
    assert error["error"]["code"] == "tool_timeout" and "within 0.5 s" in error["error"]["message"]
    # The conversation goes on: the next utterance is a new turn with the whole history.
    fresh_model.knobs.set(tool_calls=(), reply_text="Anything else?")
    await client.stream(UTTERANCE, realtime=False)
    await client.wait_for(lambda e: e.get("type") == "response.done" and e["text"] == "Anything else?")
    roles = [m["role"] for m in chat_requests(fresh_model)[-1]["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]
    late = {"type": "tool.result", "call_id": client.of_type("tool.call")[0]["call_id"], "output": 1}
    await client.send(late)
    error = await client.wait_type("error")
    assert error["code"] == "tool_error" and not error["fatal"]
    await client.close()


async def test_a_tool_of_session_a_is_never_called_on_session_b(assistant_system, fresh_model):
    fresh_model.knobs.set(tool_calls=({"name": "set_color", "arguments": {"color": "red"}},),
                          after_tool_text="I cannot do that.")
    owner = await assistant(assistant_system, COLOR_TOOL)
    other = await assistant(assistant_system)
    await other.stream(UTTERANCE, realtime=False)
    done = await other.wait_type("response.done")
    assert done["text"] == "I cannot do that."
    first, second = chat_requests(fresh_model)
    assert [t["function"]["name"] for t in first["tools"]] == ["order_status"]  # never A's tool
    assert "no tool named 'set_color'" in json.loads(second["messages"][-1]["content"])["error"]["message"]
    await asyncio.sleep(0.5)
    assert not owner.of_type("tool.call") and not other.of_type("tool.call")
    await owner.close()
    await other.close()


async def test_barge_in_stops_the_reply_at_once(assistant_system, fresh_model):
    sentences = " ".join(f"This is sentence number {n}." for n in range(1, 21))
    fresh_model.knobs.set(reply_text=sentences)
    client = await assistant(assistant_system)
    nc = await nats.connect(assistant_system.nats_url)
    published = []
    await client.stream(UTTERANCE, realtime=False)
    await client.wait_type("audio.delta")
    sid = client.of_type("session.started")[0]["session_id"]

    async def count(msg) -> None:
        if decode(msg.data).event["type"] == "audio.delta":
            published.append(msg)

    sub = await nc.subscribe(Subjects("asst").out(sid), cb=count)
    await client.send({"type": "response.cancel"})
    await client.send({"type": "ping", "id": "after-cancel"})
    await client.wait_type("pong", id="after-cancel")
    seen = len(client.of_type("audio.delta"))
    done = await client.wait_type("response.done")
    assert done["status"] == "cancelled"
    await asyncio.sleep(1.0)  # 1 s more: the TTS worker would have spoken ~10 sentences
    assert len(client.of_type("audio.delta")) == seen  # nothing of it after the cancel
    assert len(published) <= 2  # the worker stopped: at most the sentences in progress went out
    assert seen < 20  # one audio.delta per sentence with the benchmark TTS: most were never spoken
    await sub.unsubscribe()
    await nc.close()
    await client.close()


async def test_a_call_is_sent_again_after_resume(assistant_system, fresh_model):
    fresh_model.knobs.set(tool_calls=({"name": "set_color", "arguments": {"color": "red"}},),
                          after_tool_text="Red it is.")
    client = await assistant(assistant_system, COLOR_TOOL)
    started = client.of_type("session.started")[0]
    await client.stream(UTTERANCE, realtime=False)
    call = await client.wait_type("tool.call")
    client.drop()
    await asyncio.sleep(1.0)
    again = await ProtocolClient.connect(assistant_system.ws_url())
    await again.send({"type": "session.resume", "session_id": started["session_id"],
                      "resume_token": started["resume_token"], "last_seq": call["seq"]})
    resent = await again.wait_type("tool.call")
    assert resent["call_id"] == call["call_id"] and resent["seq"] > call["seq"]
    await again.send({"type": "tool.result", "call_id": call["call_id"], "output": "ok"})
    done = await again.wait_type("response.done")
    assert done["text"] == "Red it is." and done["status"] == "completed"
    await again.close()


async def test_tool_registration_errors_are_clear_and_not_fatal(assistant_system, fresh_model):
    bad = {"name": "broken", "description": "x", "parameters": {"type": "string"}}
    client = await assistant(assistant_system, bad)
    refused = await client.wait_type("error")
    assert refused["code"] == "tool_error" and not refused["fatal"] and "object" in refused["message"]
    await client.send({"type": "tool.register", **COLOR_TOOL})
    huge = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(2000)}}
    await client.send({"type": "tool.register", "name": "huge", "description": "x", "parameters": huge})
    await client.send({"type": "tool.unregister", "name": "never_registered"})
    await client.send({"type": "tool.result", "call_id": "nobody-waits", "output": 1})
    await client.send({"type": "ping", "id": "end"})
    await client.wait_type("pong", id="end")
    codes = [e["code"] for e in client.of_type("error")]
    assert codes == ["tool_error", "tool_error", "invalid_message", "tool_error"], client.of_type("error")
    # The good tool is in use: the model sees it on the next turn.
    fresh_model.knobs.set(reply_text="Hello.")
    await client.stream(UTTERANCE, realtime=False)
    await client.wait_type("response.done")
    assert [t["function"]["name"] for t in chat_requests(fresh_model)[-1]["tools"]] == ["order_status", "set_color"]
    await client.close()


async def test_a_server_tool_is_a_signed_webhook_call(assistant_system, fresh_model, receiver):
    receiver.clear_log()
    fresh_model.knobs.set(tool_calls=({"name": "order_status", "arguments": {"order_id": "A-17"}},),
                          after_tool_text="Your order {result}")
    client = await assistant(assistant_system)
    await client.send({"type": "tool.register", "name": "order_status", "description": "mine",
                       "parameters": {"type": "object"}})
    refused = await client.wait_type("error")
    assert refused["code"] == "tool_error" and "server tool" in refused["message"]
    await client.stream(UTTERANCE, realtime=False)
    done = await client.wait_type("response.done")
    [hook] = receiver.requests  # the receiver checked the HMAC signature, or it would answer 401
    assert hook.json["name"] == "order_status" and hook.json["arguments"] == {"order_id": "A-17"}
    assert json.loads(done["text"].removeprefix("Your order ")) == {"order_id": "A-17", "status": "shipped"}
    assert not client.of_type("tool.call")  # a server tool never goes to the client
    await client.close()


async def test_speaking_over_the_reply_cancels_it(assistant_system, fresh_model):
    fresh_model.knobs.set(reply_text=" ".join(f"Sentence {n} of a long answer." for n in range(1, 21)))
    client = await assistant(assistant_system)
    await client.stream(UTTERANCE, realtime=False)
    first = await client.wait_type("audio.delta")
    await client.stream(tone(220, 0.3, 16000), realtime=False)  # the user talks over it
    done = await client.wait_type("response.done", response_id=first["response_id"])
    assert done["status"] == "cancelled"
    fresh_model.knobs.set(reply_text="Yes?")
    await client.stream(b"\x00\x00" * 8000, realtime=False)  # the interruption ends; it is a turn
    nxt = await client.wait_for(lambda e: e.get("type") == "response.done" and e["response_id"] != first["response_id"])
    assert nxt["status"] == "completed" and nxt["text"] == "Yes?"
    await client.close()

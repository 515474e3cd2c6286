"""A speech-to-speech session through the whole system: edge → tools worker's Realtime
bridge → a fake OpenAI Realtime server, with a client tool; all processes real."""

from __future__ import annotations

import pytest

from shared.audio import tone
from tests.fakes.openai_realtime_server import FakeRealtime
from tests.support.client import ProtocolClient
from tests.support.system import ParleySystem

UTTERANCE = tone(220, 1.0, 16000) + b"\x00\x00" * 8000
WEATHER = {"name": "get_weather", "description": "Weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def realtime():
    with FakeRealtime(api_key="sk-realtime") as fake:
        yield fake


@pytest.fixture(scope="module")
def realtime_system(realtime, nats_server, tmp_path_factory):
    system = ParleySystem(nats_server.url, None, "bench", tmp_path_factory.mktemp("realtime-logs"), env={
        "PARLEY_PREFIX": "rtsys", "OPENAI_API_KEY": "sk-realtime", "OPENAI_BASE_URL": realtime.base_url,
        "PARLEY_LLM_CHAIN": "local",
    })
    system.start_all()
    yield system
    assert all(code == 0 for code in system.stop_all().values())


async def test_a_realtime_session_calls_the_clients_tool_and_speaks(realtime_system, realtime):
    realtime.knobs.tool, realtime.knobs.tool_args = "get_weather", {"city": "Paris"}
    realtime.knobs.transcripts = ["What is the weather in Paris?"]
    client = await ProtocolClient.connect(realtime_system.ws_url())
    started = await client.start(mode="assistant", language="en", engine="realtime", tools=[WEATHER])
    assert started["type"] == "session.started" and started["engine"] == "realtime", started
    await client.stream(UTTERANCE, realtime=False)
    final = await client.wait_type("transcript.final")
    assert final["text"] == "What is the weather in Paris?"
    call = await client.wait_type("tool.call")
    assert call["name"] == "get_weather" and call["arguments"] == {"city": "Paris"}
    await client.send({"type": "tool.result", "call_id": call["call_id"], "output": {"sky": "clear"}})
    done = await client.wait_for(lambda e: e.get("type") == "response.done" and "answer" in e.get("text", ""))
    assert done["status"] == "completed" and "clear" in done["text"]
    assert client.audio(done["response_id"])  # spoken, resampled to the session's rate
    upstream = realtime.connections[-1]
    update = upstream.of_type("session.update")[0]["session"]
    assert [t["name"] for t in update["tools"]] == ["get_weather"]
    await client.close()


async def test_the_realtime_engine_is_refused_where_no_worker_offers_it(nats_server, tmp_path):
    system = ParleySystem(nats_server.url, None, "bench", tmp_path, env={"PARLEY_PREFIX": "nort"})
    system.start_all()
    try:
        client = await ProtocolClient.connect(system.ws_url())
        reply = await client.start(mode="assistant", language="en", engine="realtime")
        assert reply["type"] == "error" and reply["code"] == "provider_unavailable" and reply["fatal"]
        assert "OPENAI_API_KEY" in reply["message"]
    finally:
        system.stop_all()

"""The realtime bridge on real NATS + JetStream, against the fake OpenAI Realtime server.

The test plays the edge: it claims on `parley.realtime.claim`, publishes AudioChunks,
reads the out-stream, answers tool calls with ToolAnswer requests and sends control
messages. The owner runs in-process on a real micro service."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, replace

import pytest
from nats.micro import add_service
from nats.micro.service import ServiceConfig

from services.tools.realtime.owner import add_realtime_endpoint
from shared import bus
from shared.audio import tone
from shared.config import Settings
from shared.messages import (
    Assistant,
    AudioChunk,
    CancelResponse,
    ClientPresence,
    Route,
    SessionEnd,
    SttClaim,
    SttClaimed,
    SttLease,
    ToolAnswer,
    ToolDecl,
    decode,
    encode,
)
from shared.provider_config import ProviderSettings
from shared.secrets import Secret
from shared.subjects import Subjects
from shared.worker import Runtime
from tests.fakes.openai_realtime_server import FakeRealtime

KEY = "sk-bridge-5ecret-0123456789"
IN_RATE_HZ, OUT_RATE_HZ = 16000, 16000
WEATHER = ToolDecl("get_weather", "Weather of a city", {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
    "additionalProperties": False}, timeout_s=5.0)


@dataclass
class Bridge:
    fake: FakeRealtime
    subjects: Subjects
    nc: object  # the edge's own connection
    js: object

    async def claim(self, sid: str, tools=(WEATHER,), out_rate: int = OUT_RATE_HZ) -> SttClaimed:
        assistant = Assistant("Be brief.", tuple(tools), "en", out_rate, engine="realtime")
        claim = SttClaim(sid, "en", IN_RATE_HZ, Route((sid,), ()), assistant=assistant)
        reply = await self.nc.request(self.subjects.realtime_claim, encode(claim), timeout=10)
        return decode(reply.data)

    async def say(self, sid: str, utterance: str, seconds: float = 1.0) -> None:
        """Any PCM will do: the fake transcribes by knob. 500 ms chunks, the last marked."""
        pcm = tone(220.0, seconds, IN_RATE_HZ)
        pieces = [pcm[at:at + IN_RATE_HZ] for at in range(0, len(pcm), IN_RATE_HZ)]
        for index, piece in enumerate(pieces):
            chunk = AudioChunk(sid, utterance, index, IN_RATE_HZ, piece, last=index == len(pieces) - 1)
            await self.nc.publish(self.subjects.audio(sid), encode(chunk))

    async def answer(self, sid: str, call_id: str, output=None, error=None):
        reply = await self.nc.request(self.subjects.tool_answers(sid),
                                      encode(ToolAnswer(sid, call_id, output, error)), timeout=5)
        return decode(reply.data)

    async def control(self, message) -> None:
        await self.nc.publish(self.subjects.ctl(message.sid), encode(message))

    async def out(self, sid: str) -> "OutStream":
        sub = await self.js.subscribe(self.subjects.out(sid), ordered_consumer=True)
        return OutStream(sub)


class OutStream:
    """The client's out-stream as the edge reads it, with everything seen kept."""

    def __init__(self, sub) -> None:
        self.sub, self.seen = sub, []

    async def next(self, predicate, timeout_s: float = 10.0) -> dict:
        async with asyncio.timeout(timeout_s):
            while True:
                msg = await self.sub.next_msg(timeout=timeout_s)
                event = decode(msg.data).event
                self.seen.append(event)
                if predicate(event):
                    return event

    async def quiet(self, seconds: float) -> list[dict]:
        """Whatever else arrives within `seconds`."""
        more = []
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    more.append(await self.next(lambda e: True, seconds + 1))
        return more


def of(kind: str, **fields):
    return lambda e: e["type"] == kind and all(e.get(k) == v for k, v in fields.items())


async def eventually(condition, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture
async def bridge(nats_server):
    prefix = f"rt{uuid.uuid4().hex[:8]}"
    with FakeRealtime(api_key=KEY) as fake:
        providers = ProviderSettings(openai_api_key=Secret(KEY), openai_base_url=fake.base_url,
                                     timeout_s=5.0)
        settings = Settings(nats_url=nats_server.url, prefix=prefix, providers=providers,
                            resume_window_s=30.0)
        subjects = Subjects(prefix)
        nc = await bus.connect(nats_server.url, "realtime-test-worker")
        js = nc.jetstream()
        await bus.ensure_streams(js, subjects, settings.resume_window_s)
        runtime = Runtime("tools", settings, subjects, nc, js)
        service = await add_service(nc, ServiceConfig(name=subjects.service_name("tools"),
                                                      version="0.0.1"))
        await add_realtime_endpoint(service, runtime)
        edge = await bus.connect(nats_server.url, "realtime-test-edge")
        yield Bridge(fake, subjects, edge, edge.jetstream())
        await service.stop()
        for close in runtime.closers:
            await close()
        await edge.drain()
        await nc.drain()


def sid() -> str:
    return f"s{uuid.uuid4().hex[:10]}"


async def test_a_tool_call_goes_to_the_client_and_its_answer_back_to_the_model(bridge):
    bridge.fake.knobs.tool, bridge.fake.knobs.tool_args = "get_weather", {"city": "Paris"}
    bridge.fake.knobs.reply_audio_s = 0.5
    s = sid()
    claimed = await bridge.claim(s)
    assert isinstance(claimed, SttClaimed) and claimed.sid == s
    out = await bridge.out(s)
    await bridge.say(s, f"{s}-1-1")
    final = await out.next(of("transcript.final"))
    assert final == {"type": "transcript.final", "utterance_id": f"{s}-1-1", "speaker": s,
                     "language": "en", "text": "What is the weather in Paris?"}
    call = await out.next(of("tool.call"))
    assert call["name"] == "get_weather" and call["arguments"] == {"city": "Paris"}
    assert call["response_id"]
    ack = await bridge.answer(s, call["call_id"], {"temp_c": 21})
    assert ack.accepted and ack.call_id == call["call_id"]
    done = await out.next(of("response.done", status="completed", text='The answer is {"temp_c": 21}'))
    rid = done["response_id"]
    deltas = [e for e in out.seen if e["type"] == "audio.delta" and e["response_id"] == rid]
    assert sum(len(e["audio"]) for e in deltas) == int(0.5 * OUT_RATE_HZ) * 2
    assert all(e["utterance_id"] == rid for e in deltas)
    assert of("audio.done", response_id=rid)(out.seen[-2])
    assert any(of("response.text", response_id=rid)(e) for e in out.seen)
    outputs = bridge.fake.connections[0].of_type("conversation.item.create")
    assert [o["item"] for o in outputs] == [{"type": "function_call_output",
                                             "call_id": call["call_id"],
                                             "output": '{"temp_c": 21}'}]
    again = await bridge.answer(s, call["call_id"], {"temp_c": 99})
    assert not again.accepted


async def test_output_audio_follows_the_sessions_rate(bridge):
    bridge.fake.knobs.reply_audio_s = 0.5
    s = sid()
    await bridge.claim(s, tools=(), out_rate=48000)
    out = await bridge.out(s)
    await bridge.say(s, f"{s}-1-1")
    done = await out.next(of("response.done"))
    audio = [e["audio"] for e in out.seen if of("audio.delta", response_id=done["response_id"])(e)]
    assert sum(map(len, audio)) == int(0.5 * 48000) * 2


async def test_an_unanswered_call_times_out_and_the_conversation_goes_on(bridge):
    bridge.fake.knobs.tool, bridge.fake.knobs.tool_args = "get_weather", {"city": "Oslo"}
    s = sid()
    await bridge.claim(s, tools=(replace(WEATHER, timeout_s=0.5),))
    out = await bridge.out(s)
    await bridge.say(s, f"{s}-1-1")
    call = await out.next(of("tool.call"))
    done = await out.next(lambda e: e["type"] == "response.done" and e["text"], timeout_s=5)
    assert done["status"] == "completed"
    assert done["text"].startswith('The answer is {"error": "tool_timeout: get_weather did not')
    (output,) = bridge.fake.connections[0].of_type("conversation.item.create")
    assert output["item"]["call_id"] == call["call_id"]
    assert json.loads(output["item"]["output"])["error"].startswith("tool_timeout:")
    late = await bridge.answer(s, call["call_id"], "too late")
    assert not late.accepted
    bridge.fake.knobs.tool = None
    await bridge.say(s, f"{s}-1-2")  # the next turn works
    await out.next(of("response.done", status="completed", text="Hello from the fake."))


@pytest.mark.parametrize("tool, args, expected", [
    ("get_weather", {"city": 5}, "invalid_arguments:"),
    ("launch_rockets", {}, "unknown_tool:"),
])
async def test_a_bad_call_goes_back_to_the_model_and_never_to_the_client(bridge, tool, args, expected):
    knobs = bridge.fake.knobs
    knobs.tool, knobs.tool_args, knobs.tool_unlisted = tool, args, True
    s = sid()
    await bridge.claim(s)
    out = await bridge.out(s)
    await bridge.say(s, f"{s}-1-1")
    done = await out.next(lambda e: e["type"] == "response.done" and e["text"])
    assert expected in done["text"]
    assert not [e for e in out.seen if e["type"] == "tool.call"]
    (output,) = bridge.fake.connections[0].of_type("conversation.item.create")
    assert json.loads(output["item"]["output"])["error"].startswith(expected)


async def test_barge_in_stops_the_replys_audio(bridge):
    knobs = bridge.fake.knobs
    knobs.reply_audio_s, knobs.audio_delay_s, knobs.cancel_lag_s = 5.0, 0.05, 0.4
    s = sid()
    await bridge.claim(s, tools=())
    out = await bridge.out(s)
    await bridge.say(s, f"{s}-1-1")
    first = await out.next(of("audio.delta"))
    rid = first["response_id"]
    await bridge.control(CancelResponse(s))
    done = await out.next(of("response.done", response_id=rid))
    assert done["status"] == "cancelled"
    later = await out.quiet(0.5)
    assert not [e for e in later if e.get("response_id") == rid]
    # Upstream kept speaking for a while (the lag); none of that reached the out-stream.
    timeline = bridge.fake.connections[0].timeline
    cancel_at = timeline.index(("in", "response.cancel"))
    before = timeline[:cancel_at].count(("out", "response.output_audio.delta"))
    after = timeline[cancel_at:].count(("out", "response.output_audio.delta"))
    published = [e for e in out.seen if of("audio.delta", response_id=rid)(e)]
    assert after >= 3 and len(published) <= before


async def test_a_client_away_keeps_the_call_and_gets_it_again_on_return(bridge):
    bridge.fake.knobs.tool, bridge.fake.knobs.tool_args = "get_weather", {"city": "Rome"}
    s = sid()
    await bridge.claim(s, tools=(replace(WEATHER, timeout_s=0.5),))
    out = await bridge.out(s)
    await bridge.say(s, f"{s}-1-1")
    call = await out.next(of("tool.call"))
    await bridge.control(ClientPresence(s, connected=False))
    await asyncio.sleep(1.0)  # twice the call's own timeout: it waits for the resume window
    assert not bridge.fake.connections[0].of_type("conversation.item.create")
    await bridge.control(ClientPresence(s, connected=True))
    again = await out.next(of("tool.call", call_id=call["call_id"]))
    assert again["arguments"] == {"city": "Rome"}
    assert (await bridge.answer(s, call["call_id"], "sunny")).accepted
    await out.next(of("response.done", text='The answer is "sunny"'))


async def test_an_expired_upstream_is_recreated_with_the_history(bridge):
    s = sid()
    await bridge.claim(s, tools=())
    out = await bridge.out(s)
    await bridge.say(s, f"{s}-1-1")
    await out.next(of("response.done", status="completed"))
    bridge.fake.expire(1)
    await eventually(lambda: len(bridge.fake.connections) == 2)
    bridge.fake.knobs.transcripts = ["And tomorrow?"]
    await bridge.say(s, f"{s}-1-2")
    final = await out.next(of("transcript.final", utterance_id=f"{s}-1-2"))
    assert final["text"] == "And tomorrow?"
    await out.next(of("response.done", status="completed"))
    second = bridge.fake.connections[1]
    assert second.received[0]["type"] == "session.update"
    assert [e["item"] for e in second.of_type("conversation.item.create")] == [
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "What is the weather in Paris?"}]},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Hello from the fake."}]},
    ]
    assert second.of_type("input_audio_buffer.commit")


async def test_the_owner_keeps_a_lease_and_session_end_closes_the_upstream(bridge):
    s = sid()
    leases = await bridge.nc.subscribe(bridge.subjects.stt_lease(s))
    claimed = await bridge.claim(s, tools=())
    lease = decode((await leases.next_msg(timeout=5)).data)
    assert isinstance(lease, SttLease) and lease.worker_id == claimed.worker_id
    await bridge.control(SessionEnd(s))
    await asyncio.to_thread(bridge.fake.connections[0].ended.wait, 5)
    assert bridge.fake.connections[0].ended.is_set()


async def test_a_claim_that_is_not_realtime_is_refused(bridge):
    claim = SttClaim(sid(), "en", IN_RATE_HZ, Route((), ()))
    reply = await bridge.nc.request(bridge.subjects.realtime_claim, encode(claim), timeout=5)
    assert reply.headers["Nats-Service-Error-Code"] == "400"
    assert bridge.fake.connections == []


async def test_an_upstream_that_cannot_come_back_ends_the_session_with_a_warning(bridge):
    s = sid()
    await bridge.claim(s, tools=())
    out = await bridge.out(s)
    bridge.fake.api_key = "sk-rotated"  # the key is revoked: re-creation gets a 401
    bridge.fake.expire(1)
    warning = await out.next(of("warning"))
    assert warning["code"] == "provider_unavailable" and "5ecret" not in json.dumps(warning)
    leases = await bridge.nc.subscribe(bridge.subjects.stt_lease(s))
    with pytest.raises(TimeoutError):  # released: no owner renews the lease any more
        await leases.next_msg(timeout=2 * 3.0 / 3 + 0.5)

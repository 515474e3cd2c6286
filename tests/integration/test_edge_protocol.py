"""The client protocol against a real edge, bus and workers (benchmark engines)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.audio import tone
from tests.support.client import ProtocolClient

SILENCE_1S = b"\x00\x00" * 16000
TONE_2S = tone(220, 2.0, 16000)


def http_get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read(), reply.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get("Content-Type", "")


async def started_client(system, **fields) -> ProtocolClient:
    client = await ProtocolClient.connect(system.ws_url())
    reply = await client.start(**{"language": "en", "target_language": "es", **fields})
    assert reply["type"] == "session.started", reply
    return client


def test_health_ready_page_metrics_and_404(bench_parley):
    base = bench_parley.url()
    assert http_get(base + "/healthz")[0] == 200
    assert http_get(base + "/readyz")[0] == 200
    status, body, content_type = http_get(base + "/")
    assert status == 200 and b"<html" in body.lower() and content_type.startswith("text/html")
    status, body, _ = http_get(base + "/metrics")
    assert status == 200 and b"parley_sessions_live" in body
    assert http_get(base + "/nope")[0] == 404
    assert http_get(base + "/../pyproject.toml")[0] == 404


async def test_bench_engines_echo_through_the_whole_pipeline(bench_parley):
    client = await started_client(bench_parley)
    await client.stream(TONE_2S + SILENCE_1S)
    final = await client.wait_type("transcript.final")
    translation = await client.wait_type("translation")
    await client.wait_type("audio.done")
    assert final["text"] == "utterance 1"
    assert translation["text"] == "[es] utterance 1"
    assert len(client.audio()) == 2 * 8000  # exactly 500 ms at 16 kHz
    kinds = [e["type"] for e in client.durable()]
    assert kinds.index("speech.started") < kinds.index("speech.stopped") < kinds.index("transcript.final")
    await client.close()


async def test_base64_audio_commit_and_output_rate(bench_parley):
    client = await started_client(bench_parley, output_sample_rate=24000)
    await client.send({"type": "input_audio.append", "audio": base64.b64encode(TONE_2S[:16000]).decode()})
    await client.send({"type": "input_audio.commit"})  # ends the utterance without waiting for silence
    await client.wait_type("audio.done")
    assert len(client.audio()) == 2 * 12000  # 500 ms at the session's output rate
    await client.close()


async def test_second_utterance_gets_its_own_id(bench_parley):
    client = await started_client(bench_parley)
    await client.stream(TONE_2S[:16000] + SILENCE_1S + TONE_2S[:16000] + SILENCE_1S, realtime=False)
    await client.wait_for(lambda e: e.get("text") == "utterance 2")
    finals = client.of_type("transcript.final")
    assert [f["text"] for f in finals] == ["utterance 1", "utterance 2"]
    assert finals[0]["utterance_id"] != finals[1]["utterance_id"]
    await client.close()


BAD_MESSAGES = [
    ("not json", "invalid_message"),
    (json.dumps([1, 2]), "invalid_message"),
    (json.dumps({"type": "no.such.event"}), "invalid_message"),
    (json.dumps({"type": 7}), "invalid_message"),
    (json.dumps({"type": "ack", "seq": "x"}), "invalid_message"),
    (json.dumps({"type": "input_audio.append", "audio": "!!!"}), "invalid_audio"),
    (json.dumps({"type": "input_audio.append", "audio": base64.b64encode(b"\x01").decode()}), "invalid_audio"),
    (json.dumps({"type": "ping", "pad": "x" * 70000}), "invalid_message"),
    (b"\x01\x02\x03", "invalid_audio"),
    (b"\x00\x00" * 16001, "invalid_audio"),  # more than 1 s of audio in one frame
]


@pytest.mark.parametrize("frame,code", BAD_MESSAGES, ids=range(len(BAD_MESSAGES)))
async def test_bad_input_gets_an_error_and_the_connection_survives(bench_parley, frame, code):
    client = await started_client(bench_parley)
    await client.ws.send(frame)
    error = await client.wait_type("error")
    assert error["code"] == code and error["fatal"] is False
    await client.send({"type": "ping", "id": "still-there"})
    await client.wait_type("pong", id="still-there")
    await client.close()


async def test_malformed_start_is_not_fatal(bench_parley):
    client = await ProtocolClient.connect(bench_parley.ws_url())
    await client.send({"type": "session.start", "mode": "translate", "language": "en",
                       "target_language": "es", "input_sample_rate": 96000})
    error = await client.wait_type("error")
    assert error["code"] == "invalid_message" and "input_sample_rate" in error["message"]
    await client.send({"type": "session.start", "mode": "translate", "language": "en", "target_language": "es"})
    await client.wait_type("session.started")
    await client.close()


@pytest.mark.parametrize("first", [b"\x00\x00", json.dumps({"type": "ping"})])
async def test_first_message_must_start_or_resume(bench_parley, first):
    client = await ProtocolClient.connect(bench_parley.ws_url())
    await client.ws.send(first)
    assert (await client.closed)[0] == 4400


async def test_no_start_in_time_closes_4408(bench_parley):
    client = await ProtocolClient.connect(bench_parley.ws_url())
    assert (await client.closed)[0] == 4408


async def test_resume_of_unknown_session_closes_4404(bench_parley):
    client = await ProtocolClient.connect(bench_parley.ws_url())
    await client.send({"type": "session.resume", "session_id": "nope", "resume_token": "x", "last_seq": 0})
    assert (await client.wait_type("error"))["code"] == "session_not_found"
    assert (await client.closed)[0] == 4404


async def test_session_end_sends_session_ended_and_closes_normally(bench_parley):
    client = await started_client(bench_parley)
    await client.send({"type": "session.end"})
    ended = await client.wait_type("session.ended")
    assert ended["reason"] == "client_ended" and "seq" in ended
    assert (await client.closed)[0] == 1000


async def test_assistant_mode_for_a_language_nobody_speaks_is_refused(bench_parley):
    client = await ProtocolClient.connect(bench_parley.ws_url())
    reply = await client.start(mode="assistant", language="xx")
    assert reply["type"] == "error" and reply["code"] == "provider_unavailable" and reply["fatal"]
    assert "'xx'" in reply["message"]


TOOL = {"name": "utterance_probe", "description": "A tool the fuzzed session must never reach",
        "parameters": {"type": "object", "properties": {}}}
OTHER_SESSION = "@other-session"  # replaced by a bystander's session id when sent
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.just(OTHER_SESSION),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)
frames = st.one_of(
    st.binary(max_size=4000),
    st.text(max_size=200),
    st.dictionaries(st.sampled_from(["type", "seq", "audio", "id", "name", "call_id", "session_id"]),
                    json_values, max_size=4).map(json.dumps),
    st.sampled_from(["ack", "ping", "input_audio.append", "input_audio.commit", "tool.register",
                     "tool.result", "response.cancel", "session.start", "session.resume"]).flatmap(
        lambda t: st.dictionaries(st.text(max_size=12), json_values, max_size=3).map(
            lambda d: json.dumps({**d, "type": t}))),
)


async def test_random_frames_never_break_a_session_nor_reach_another(bench_parley):
    """Hypothesis throws random frames at one live session, some naming a bystander session;
    it must answer each bad one with a non-fatal error, keep the connection, and still work
    afterwards — and the bystander hears nothing of it."""
    bystander = await started_client(bench_parley, mode="assistant", target_language=None, tools=[TOOL])
    other_sid = bystander.of_type("session.started")[0]["session_id"]
    client = await started_client(bench_parley)
    sid = client.of_type("session.started")[0]["session_id"]
    sent = []

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(frames)
    def collect(frame):
        sent.append(frame)

    collect()
    for frame in sent:
        if frame == json.dumps({"type": "session.end"}):
            continue
        await client.ws.send(frame.replace(OTHER_SESSION, other_sid) if isinstance(frame, str) else frame)
    await client.send({"type": "ping", "id": "after-fuzz"})
    await client.wait_type("pong", id="after-fuzz", timeout=30)
    assert not any(e.get("fatal") for e in client.of_type("error"))
    assert not client.closed.done()
    await bystander.send({"type": "ping", "id": "still-mine"})
    await bystander.wait_type("pong", id="still-mine")
    assert bystander.types() == ["session.started", "pong"], bystander.events
    assert sid not in json.dumps(bystander.events)
    await client.close()
    await bystander.close()
    bench_parley.check_alive()


async def test_stream_frames_of_every_supported_rate(bench_parley):
    for rate in (8000, 22050, 44100, 48000):
        client = await started_client(bench_parley, input_sample_rate=rate)
        pcm = tone(220, 1.0, rate) + b"\x00\x00" * rate
        await client.stream(pcm, sample_rate=rate, realtime=False)
        await client.wait_type("audio.done")
        samples = np.frombuffer(client.audio(), dtype=np.int16)
        assert len(samples) == 8000
        await client.close()


async def test_resume_while_the_old_connection_is_still_open(bench_parley):
    """The client reconnects before the edge noticed the drop: the new connection wins, and
    the old one closing later does not end or shorten the session."""
    old = await started_client(bench_parley)
    started = old.of_type("session.started")[0]
    new = await ProtocolClient.connect(bench_parley.ws_url())
    await new.send({"type": "session.resume", "session_id": started["session_id"],
                    "resume_token": started["resume_token"], "last_seq": 0})
    assert (await new.wait_type("session.started"))["resumed"] is True
    await old.close()
    await new.stream(TONE_2S[:16000] + SILENCE_1S, realtime=False)
    final = await new.wait_type("transcript.final")
    assert final["utterance_id"].startswith(started["session_id"] + "-2-")  # the new generation
    await new.send({"type": "ping", "id": 1})
    await new.wait_type("pong")
    await new.close()

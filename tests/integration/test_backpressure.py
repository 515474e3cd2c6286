"""Backpressure. A client that reads too slowly cannot grow the edge's memory, and loses
nothing durable: partials are shed, then the edge closes with 1013 and the client resumes
from its last seq. An STT owner that falls behind its audio sheds mid-utterance chunks,
never an utterance's end."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import urllib.request

import nats
import websockets

from shared import bus
from shared.audio import tone
from shared.subjects import Subjects
from tests.support.client import ProtocolClient
from tests.support.system import ParleySystem

FINALS = 1000
# 16 KB an event, incompressible (the edge speaks permessage-deflate): 32 MB in all, far
# more than loopback's socket buffers hold.
PAD = base64.b64encode(os.urandom(12000)).decode()


async def slow_connection(url: str):
    """A WebSocket whose receive buffer is tiny, so the edge's writes back up at once."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    return await websockets.connect(url, sock=sock, max_size=None, max_queue=4)


async def test_a_slow_reader_is_shed_then_closed_and_resumes_without_loss(bench_parley):
    ws = await slow_connection(bench_parley.ws_url())
    await ws.send(json.dumps({"type": "session.start", "mode": "translate", "language": "en",
                              "target_language": "es"}))
    started = json.loads(await ws.recv())
    sid = started["session_id"]
    bystander = await ProtocolClient.connect(bench_parley.ws_url())
    await bystander.start(language="en", target_language="es")
    nc = await nats.connect(bench_parley.nats_url)
    js, subjects = nc.jetstream(), Subjects("benchsys")
    for n in range(FINALS):  # as STT workers would write them, while the client reads nothing
        await bus.publish_event(js, subjects, sid, {"type": "transcript.partial", "text": PAD})
        await bus.publish_event(js, subjects, sid, {"type": "transcript.final", "text": f"{n} {PAD}"})
    received = []
    try:
        while True:  # now read what the edge managed to send before it gave up
            received.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    except websockets.ConnectionClosed:
        pass
    assert ws.close_code == 1013, (ws.close_code, len(received))
    durable = [e for e in received if "seq" in e]
    last_seq = durable[-1]["seq"] if durable else 0
    again = await ProtocolClient.connect(bench_parley.ws_url())
    await again.send({"type": "session.resume", "session_id": sid, "resume_token": started["resume_token"],
                      "last_seq": last_seq})
    await again.wait_for(lambda e: e.get("type") == "transcript.final" and e["text"].startswith(f"{FINALS - 1} "), 60)
    finals = [e["text"].split()[0] for e in durable + again.durable() if e["type"] == "transcript.final"]
    assert finals == [str(n) for n in range(FINALS)]  # every final once, in order
    assert any(e.get("code") == "slow_client" for e in durable + again.durable())
    with urllib.request.urlopen(bench_parley.url() + "/metrics", timeout=5) as reply:
        shed = [line for line in reply.read().decode().splitlines() if line.startswith("parley_partials_shed_total")]
    assert float(shed[0].split()[-1]) > 0
    await bystander.send({"type": "ping", "id": "still-fine"})
    await bystander.wait_type("pong", id="still-fine")  # other sessions were not held up
    await again.close()
    await bystander.close()
    await nc.close()


async def test_an_stt_owner_that_falls_behind_sheds_mid_utterance_audio_and_every_utterance_ends(
        nats_server, tmp_path):
    """Audio far faster than a (4 s per final) recogniser takes it: its queue overflows, the
    oldest audio inside an utterance goes, never an utterance's end — every utterance gets
    its final, and the speaker is warned once for the utterance that lost audio."""
    system = ParleySystem(nats_server.url, None, "bench", tmp_path,
                          env={"PARLEY_PREFIX": "flood", "PARLEY_BENCH_STT_DELAY_MS": "4000"})
    system.start_all()
    try:
        client = await ProtocolClient.connect(system.ws_url())
        await client.start(language="en", target_language="es")
        silence = b"\x00\x00" * 8000
        for seconds in (1, 25, 20):  # 1 + 50 + 40 chunks arrive while the first final takes 4 s
            await client.stream(tone(220, seconds, 16000) + silence, realtime=False)
        finals = [await client.wait_type("transcript.final", text=f"utterance {n}", timeout=30) for n in (1, 2, 3)]
        warnings = client.of_type("warning")
        assert [w["code"] for w in warnings] == ["audio_dropped"], warnings
        assert warnings[0]["utterance_id"] == finals[1]["utterance_id"]  # the long one in the queue
        await client.close()
    finally:
        codes = system.stop_all()
    assert all(code == 0 for code in codes.values()), codes

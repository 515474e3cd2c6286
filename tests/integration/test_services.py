"""Workers as NATS micro services, readiness, and work shared between instances."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import nats
import pytest

from shared import bus
from shared.audio import tone
from shared.messages import Assistant, AssistantTurn, Listener, TranslateWork, encode
from shared.subjects import WORKER_KINDS, Subjects
from tests.integration.test_edge_protocol import http_get
from tests.support.client import ProtocolClient
from tests.support.system import ParleySystem


async def collect(nc, subject: str, wait_s: float = 1.0) -> list[dict]:
    """Every answer to a $SRV request (many instances answer one request)."""
    inbox = nc.new_inbox()
    answers: list[dict] = []

    async def on_answer(msg) -> None:
        answers.append(json.loads(msg.data))

    sub = await nc.subscribe(inbox, cb=on_answer)
    await nc.publish(subject, b"", reply=inbox)
    await asyncio.sleep(wait_s)
    await sub.unsubscribe()
    return answers


async def test_every_worker_answers_srv_ping_info_stats(bench_parley):
    nc = await nats.connect(bench_parley.nats_url)
    try:
        pings = await collect(nc, "$SRV.PING")
        names = {p["name"] for p in pings}
        assert {f"benchsys-{kind}" for kind in WORKER_KINDS} <= names
        for kind in WORKER_KINDS:
            [info] = await collect(nc, f"$SRV.INFO.benchsys-{kind}")
            endpoints = {e["name"] for e in info["endpoints"]}
            assert "caps" in endpoints and (kind != "stt" or "claim" in endpoints)
            metrics_url = info["metadata"]["metrics_url"]
            with urllib.request.urlopen(metrics_url, timeout=5) as reply:
                assert b"parley_work_done_total" in reply.read()
            assert int(info["metadata"]["pid"]) == bench_parley.processes[kind].pid
            [stats] = await collect(nc, f"$SRV.STATS.benchsys-{kind}")
            assert {e["name"] for e in stats["endpoints"]} == endpoints
            caps = next(e for e in stats["endpoints"] if e["name"] == "caps")
            assert caps["num_requests"] >= 1  # the edge asked at least once (readyz)
    finally:
        await nc.close()


async def test_edge_without_workers_is_not_ready_and_refuses_sessions(nats_server, tmp_path):
    lonely = ParleySystem(nats_server.url, None, "bench", tmp_path, env={"PARLEY_PREFIX": "lonely"})
    lonely.start_edge()
    try:
        lonely.wait_ready(path="/healthz")
        status, body, _ = http_get(lonely.url() + "/readyz")
        assert status == 503 and b"stt" in body
        client = await ProtocolClient.connect(lonely.ws_url())
        reply = await client.start(language="en", target_language="es")
        assert reply["code"] == "provider_unavailable" and "no stt worker" in reply["message"]
    finally:
        assert lonely.stop_all() == {"edge": 0}


def _counter(metrics_url: str, kind: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(f'parley_work_done_total{{kind="{kind}"}}'):
                return float(line.split()[-1])
    return 0.0


async def test_stt_owner_killed_mid_utterance_another_worker_takes_over(nats_server, tmp_path):
    """The edge keeps the utterance in progress; when the owner's lease lapses it claims
    again and replays, so the final transcript still arrives."""
    system = ParleySystem(nats_server.url, None, "bench", tmp_path, env={"PARLEY_PREFIX": "failover"})
    system.start_all()
    try:
        client = await ProtocolClient.connect(system.ws_url())
        assert (await client.start(language="en", target_language="es"))["type"] == "session.started"
        system.start_worker("stt", "stt-2")  # joins after the claim: the first worker owns the session
        await asyncio.sleep(1.0)
        pcm = tone(220, 2.0, 16000)
        await client.stream(pcm[:32000])  # 1 s of speech reaches the owner
        system.processes.pop("stt").kill()
        await client.stream(pcm[32000:] + b"\x00\x00" * 16000)
        final = await client.wait_type("transcript.final", timeout=20)
        await client.wait_type("audio.done", timeout=10)
        assert final["text"].startswith("utterance")
        assert len(client.of_type("transcript.final")) == 1
        await client.close()
    finally:
        codes = system.stop_all()
    assert all(code == 0 for code in codes.values()), codes


def _late_work(kind: str, sid: str):
    if kind == "translate":
        return TranslateWork(sid, f"{sid}-9-1", "late", "en", "es", (Listener(sid, "es"),))
    return AssistantTurn(sid, f"{sid}-9-1", "late", Assistant("Be brief.", (), "en", 16000))


@pytest.mark.parametrize("kind", ["translate", "tools"])
async def test_work_past_its_deadline_is_dropped_with_a_warning(bench_parley, kind):
    client = await ProtocolClient.connect(bench_parley.ws_url())
    mode = {"mode": "assistant"} if kind == "tools" else {"target_language": "es"}
    started = await client.start(language="en", **mode)
    sid = started["session_id"]
    nc = await nats.connect(bench_parley.nats_url)
    try:
        headers = bus.work_headers(None, -1.0, f"{sid}-late")  # the deadline passed a second ago
        await nc.jetstream().publish(Subjects("benchsys").work(kind), encode(_late_work(kind, sid)), headers=headers)
        warning = await client.wait_type("warning", code="deadline_exceeded")
        assert "too late" in warning["message"] and f"{sid}-9-1" in warning["message"]
        await asyncio.sleep(0.5)
        assert not client.of_type("translation") and not client.of_type("response.text")
    finally:
        await nc.close()
        await client.close()

"""Scaling for real: two edges and three instances of every worker kind share the work,
and an instance added under load takes work without anything else restarting."""

from __future__ import annotations

import asyncio

import nats

from shared.audio import tone
from tests.integration.test_services import _counter, collect
from tests.support.client import ProtocolClient
from tests.support.system import ParleySystem

PCM = tone(220, 1.0, 16000) + b"\x00\x00" * 16000


async def sessions(system, edges, n: int, **start) -> list[ProtocolClient]:
    clients = []
    for i in range(n):
        client = await ProtocolClient.connect(system.ws_url(edges[i % len(edges)]))
        assert (await client.start(**start))["type"] == "session.started"
        clients.append(client)
    return clients


async def talk(clients, utterances: int, done: str) -> None:
    for n in range(1, utterances + 1):
        await talk_round(clients, n, done)


async def talk_round(clients, n: int, done: str = "audio.done") -> None:
    """Every client says utterance `n` and waits for its answer."""
    await asyncio.gather(*(c.stream(PCM, realtime=False) for c in clients))
    for c in clients:
        await c.wait_for(lambda e: e.get("type") == done
                         and e.get("utterance_id", e.get("response_id", "")).split("-")[2] == str(n), 30)


async def work_done(nats_url: str, prefix: str, kind: str) -> list[float]:
    nc = await nats.connect(nats_url)
    infos = await collect(nc, f"$SRV.INFO.{prefix}-{kind}")
    await nc.close()
    return [_counter(info["metadata"]["metrics_url"], kind) for info in infos]


async def test_two_edges_and_three_of_each_worker_share_the_work(nats_server, tmp_path):
    system = ParleySystem(nats_server.url, None, "bench", tmp_path, env={"PARLEY_PREFIX": "scaled"})
    system.start_all()
    system.start_edge("edge-2")
    for kind in ("stt", "translate", "tts", "tools"):
        for n in (2, 3):
            system.start_worker(kind, f"{kind}-{n}")
    try:
        system.wait_ready("edge-2")
        await asyncio.sleep(1.5)  # every instance subscribed
        translating = await sessions(system, ["edge", "edge-2"], 12, language="en", target_language="es")
        assisted = await sessions(system, ["edge", "edge-2"], 6, mode="assistant", language="en")
        await asyncio.gather(talk(translating, 3, "audio.done"), talk(assisted, 2, "response.done"))
        for kind in ("stt", "translate", "tts", "tools"):
            done = await work_done(system.nats_url, "scaled", kind)
            assert len(done) == 3 and all(count > 0 for count in done), f"{kind} work not shared: {done}"
        for client in translating + assisted:
            await client.close()
    finally:
        codes = system.stop_all()
    assert all(code == 0 for code in codes.values()), codes


async def test_an_instance_added_under_load_takes_work(nats_server, tmp_path):
    system = ParleySystem(nats_server.url, None, "bench", tmp_path, env={
        "PARLEY_PREFIX": "grown", "PARLEY_BENCH_TRANSLATE_DELAY_MS": "150"})
    system.start_all()
    try:
        clients = await sessions(system, ["edge"], 8, language="en", target_language="es")
        await talk(clients, 1, "audio.done")  # under way on the first instance alone
        system.start_worker("translate", "translate-2")
        rounds = 1
        while len(await work_done(system.nats_url, "grown", "translate")) < 2:  # until it has joined
            rounds += 1
            await talk_round(clients, rounds)
        for _ in range(3):  # the load goes on; nothing else was restarted
            rounds += 1
            await talk_round(clients, rounds)
        done = await work_done(system.nats_url, "grown", "translate")
        assert len(done) == 2 and all(count > 0 for count in done), f"the new instance took no work: {done}"
        for client in clients:
            await client.close()
    finally:
        codes = system.stop_all()
    assert all(code == 0 for code in codes.values()), codes

"""An edge lost (SIGKILL) or draining (SIGTERM → close 4503): the client resumes on another
edge (shared state in Redis) and gets every durable event after its last_seq exactly once."""

from __future__ import annotations

import signal

from tests.chaos.support import (
    Bus,
    assert_clean_exit,
    assert_utterances,
    max_seq,
    speak,
    start,
    start_translate,
    transcript,
    utterance,
    wait_done,
)
from tests.support.client import ProtocolClient

SLOW = {"PARLEY_BENCH_TRANSLATE_DELAY_MS": "1500", "PARLEY_BENCH_TTS_DELAY_MS": "1000"}


async def resume(system, edge: str, started: dict, last_seq: int) -> ProtocolClient:
    client = await ProtocolClient.connect(system.ws_url(edge))
    await client.send({"type": "session.resume", "session_id": started["session_id"],
                       "resume_token": started["resume_token"], "last_seq": last_seq})
    resumed = await client.wait_type("session.started")
    assert resumed["resumed"] is True and resumed["session_id"] == started["session_id"]
    return client


async def lose_edge_and_resume(system, how: int) -> None:
    """Speak; lose the edge while the results are on their way; resume on edge2; speak again."""
    bus = await Bus.connect(system.nats_url, system.env["PARLEY_PREFIX"])
    try:
        first, started = await start_translate(system)
        arriving = await ProtocolClient.connect(system.ws_url())  # in its start window: no session yet
        await speak(first)
        await first.wait_type("transcript.final")  # translation and speech are still to come
        system.processes["edge"].send_signal(how)
        if how == signal.SIGTERM:
            assert (await first.closed)[0] == 4503  # told to resume elsewhere
            assert (await arriving.closed)[0] == 4503  # told to start elsewhere
        code = system.processes.pop("edge").wait()
        assert how == signal.SIGKILL or code == 0, f"the draining edge exited {code}"
        last_seq = max_seq(first)
        second = await resume(system, "edge2", started, last_seq)
        await wait_done(second, utterance(started, 1, 1))
        await speak(second)  # the session goes on, in the resumed connection's generation
        await wait_done(second, utterance(started, 2, 1))
        await bus.settle(started["session_id"], second)
        assert all(e["seq"] > last_seq for e in second.durable())
        assert_utterances(transcript(first, second), [utterance(started, 1, 1), utterance(started, 2, 1)])
        await second.close()
    finally:
        await bus.close()


async def test_edge_killed_client_resumes_on_another(nats_server, redis_server, make_system):
    system = make_system(nats_server.url, redis_server.url, **SLOW)
    start(system, edges=("edge", "edge2"))
    await lose_edge_and_resume(system, signal.SIGKILL)
    assert_clean_exit(system.stop_all())


async def test_edge_draining_sends_4503_and_the_client_resumes_elsewhere(nats_server, redis_server, make_system):
    system = make_system(nats_server.url, redis_server.url, **SLOW)
    start(system, edges=("edge", "edge2"))
    await lose_edge_and_resume(system, signal.SIGTERM)
    assert_clean_exit(system.stop_all())

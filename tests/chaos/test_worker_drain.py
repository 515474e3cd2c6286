"""SIGTERM on a worker mid-work: it leaves its queue groups first (no longer listed in
$SRV.INFO while it still works), then finishes its in-flight work or, past the drain
deadline, hands it back (nak: redone at once by another instance); it exits 0 and the
client gets every result exactly once."""

from __future__ import annotations

import signal

from tests.chaos.support import (
    Bus,
    assert_clean_exit,
    assert_replies,
    assert_utterances,
    eventually,
    speak,
    start,
    start_assistant,
    start_translate,
    transcript,
    utterance,
    wait_done,
)


async def _instances(bus: Bus, kind: str, n: int) -> bool:
    return len(await bus.instances(kind)) == n


async def drain_mid_work(system, bus: Bus, kind: str) -> tuple:
    """Speak; SIGTERM the first `kind` worker while it holds the work; the second finishes."""
    client, started = await start_translate(system)  # an stt worker owns the session from here
    await speak(client)
    if kind == "stt":
        await client.wait_type("speech.stopped", utterance_id=utterance(started, 1, 1))
    else:
        await eventually(lambda: bus.held(kind), f"the {kind} worker holds the work")
    system.start_worker(kind, f"{kind}-2")
    await eventually(lambda: _instances(bus, kind, 2), f"a second {kind} instance")
    draining = system.processes.pop(kind)
    draining.send_signal(signal.SIGTERM)
    await eventually(lambda: _instances(bus, kind, 1), f"the draining {kind} worker leaves its service")
    assert draining.poll() is None or draining.returncode == 0  # it left before it exited
    await wait_done(client, utterance(started, 1, 1))
    assert draining.wait(30) == 0
    await speak(client)  # the session goes on
    await wait_done(client, utterance(started, 1, 2))
    await bus.settle(started["session_id"], client)
    assert_utterances(transcript(client), [utterance(started, 1, 1), utterance(started, 1, 2)])
    await client.close()


async def test_translate_worker_finishes_its_work_within_the_deadline(nats_server, make_system):
    system = make_system(nats_server.url)
    start(system, translate={"PARLEY_BENCH_TRANSLATE_DELAY_MS": "3000"})
    bus = await Bus.connect(system.nats_url, system.env["PARLEY_PREFIX"])
    try:
        await drain_mid_work(system, bus, "translate")
    finally:
        await bus.close()
    assert_clean_exit(system.stop_all())


async def test_tts_worker_hands_back_work_it_cannot_finish_in_time(nats_server, make_system):
    system = make_system(nats_server.url, PARLEY_DRAIN_TIMEOUT_S="1")
    start(system, tts={"PARLEY_BENCH_TTS_DELAY_MS": "60000"})  # never done by the deadline
    bus = await Bus.connect(system.nats_url, system.env["PARLEY_PREFIX"])
    try:
        await drain_mid_work(system, bus, "tts")
    finally:
        await bus.close()
    assert_clean_exit(system.stop_all())


async def test_stt_worker_draining_mid_utterance_hands_the_session_over(nats_server, make_system):
    system = make_system(nats_server.url)
    start(system, stt={"PARLEY_BENCH_STT_DELAY_MS": "60000"})
    bus = await Bus.connect(system.nats_url, system.env["PARLEY_PREFIX"])
    try:
        await drain_mid_work(system, bus, "stt")
    finally:
        await bus.close()
    assert_clean_exit(system.stop_all())


async def test_tools_worker_draining_while_the_client_runs_its_tool_hands_the_turn_back(nats_server, make_system):
    """The turn waits on the client past the drain deadline: the draining worker hands it
    back, another instance asks the model again (the same call, which the client sees once),
    and the client's answer completes the reply once."""
    system = make_system(nats_server.url, PARLEY_DRAIN_TIMEOUT_S="1")
    start(system)
    bus = await Bus.connect(system.nats_url, system.env["PARLEY_PREFIX"])
    try:
        client, started = await start_assistant(system)
        await speak(client)
        call = await client.wait_type("tool.call", timeout=30)
        system.start_worker("tools", "tools-2")
        await eventually(lambda: _instances(bus, "tools", 2), "a second tools instance")
        draining = system.processes.pop("tools")
        draining.send_signal(signal.SIGTERM)
        assert draining.wait(30) == 0  # it handed the turn back and left
        await client.send({"type": "tool.result", "call_id": call["call_id"], "output": {"noted": True}})
        done = await client.wait_type("response.done", timeout=45)
        assert done["status"] == "completed" and "noted" in done["text"], done
        await bus.settle(started["session_id"], client)
        assert_replies(transcript(client), [done["response_id"]])
        await client.close()
    finally:
        await bus.close()
    assert_clean_exit(system.stop_all())

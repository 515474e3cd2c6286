"""SIGKILL of a worker while it holds a session's work: another instance redoes it, and
the client gets every result exactly once (JetStream redelivery + Nats-Msg-Id dedup for
translate/tts/tools; the STT lease and the edge's replay for stt)."""

from __future__ import annotations

import pytest

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

SLOW = "8000"  # the victim's engine delay: it holds the work long enough to be killed


async def replace_worker(system, bus: Bus, kind: str) -> None:
    """Start a second instance of `kind`, wait until it serves, then SIGKILL the first."""
    system.start_worker(kind, f"{kind}-2")
    await eventually(lambda: _count(bus, kind, 2), f"a second {kind} instance")
    victim = system.processes.pop(kind)
    victim.kill()
    victim.wait()


async def _count(bus: Bus, kind: str, n: int) -> bool:
    return len(await bus.instances(kind)) == n


@pytest.mark.parametrize("kind", ["translate", "tts"])
async def test_work_of_a_killed_worker_is_done_once_by_another(kind, nats_server, make_system):
    system = make_system(nats_server.url)
    start(system, **{kind: {f"PARLEY_BENCH_{kind.upper()}_DELAY_MS": SLOW}})
    bus = await Bus.connect(system.nats_url, system.env["PARLEY_PREFIX"])
    try:
        client, started = await start_translate(system)
        await speak(client)
        await eventually(lambda: bus.held(kind), f"the {kind} worker holds the work")
        await replace_worker(system, bus, kind)
        first = utterance(started, 1, 1)
        await wait_done(client, first)
        await speak(client)  # the session goes on
        await wait_done(client, utterance(started, 1, 2))
        await bus.settle(started["session_id"], client)
        assert_utterances(transcript(client), [first, utterance(started, 1, 2)])
        await client.close()
    finally:
        await bus.close()
    assert_clean_exit(system.stop_all())


async def test_stt_owner_killed_before_its_final_another_replays_the_utterance(nats_server, make_system):
    system = make_system(nats_server.url)
    start(system, stt={"PARLEY_BENCH_STT_DELAY_MS": SLOW})
    bus = await Bus.connect(system.nats_url, system.env["PARLEY_PREFIX"])
    try:
        client, started = await start_translate(system)  # the slow worker owns the session
        system.start_worker("stt", "stt-2")
        await eventually(lambda: _count(bus, "stt", 2), "a second stt instance")
        await speak(client)
        first = utterance(started, 1, 1)
        await client.wait_type("speech.stopped", utterance_id=first)  # the owner has it all
        system.processes.pop("stt").kill()  # ... and dies before its final
        await wait_done(client, first)
        await speak(client)
        await wait_done(client, utterance(started, 1, 2))
        await bus.settle(started["session_id"], client)
        assert_utterances(transcript(client), [first, utterance(started, 1, 2)])
        await client.close()
    finally:
        await bus.close()
    assert_clean_exit(system.stop_all())


ASSISTANT_KINDS = ("tool.call", "response.done")


async def test_tools_worker_killed_while_the_client_runs_its_tool(nats_server, make_system):
    """The turn is redelivered to another tools worker, which asks the model again: the
    same call (deduplicated, the client sees it once), and the client's late answer
    reaches the new turn."""
    system = make_system(nats_server.url)
    start(system)
    bus = await Bus.connect(system.nats_url, system.env["PARLEY_PREFIX"])
    try:
        client, started = await start_assistant(system)
        await speak(client)
        call = await client.wait_type("tool.call", timeout=30)
        await replace_worker(system, bus, "tools")  # while the turn waits for the client's answer
        await client.send({"type": "tool.result", "call_id": call["call_id"], "output": {"noted": True}})
        first = await client.wait_type("response.done", timeout=45)
        assert first["status"] == "completed" and "noted" in first["text"], first
        await speak(client)
        second = await client.wait_for(lambda e: e.get("type") == "tool.call" and e["call_id"] != call["call_id"])
        await client.send({"type": "tool.result", "call_id": second["call_id"], "output": {"noted": True}})
        await client.wait_for(lambda e: e.get("type") == "response.done" and e["response_id"] != first["response_id"])
        await bus.settle(started["session_id"], client)
        assert_replies(transcript(client), [first["response_id"], second["response_id"]])
        assert not client.of_type("error"), client.of_type("error")
        await client.close()
    finally:
        await bus.close()
    assert_clean_exit(system.stop_all())


async def test_tts_worker_killed_while_it_speaks_an_assistant_reply(nats_server, make_system):
    """The dead worker stops beating; the turn runner sends the sentence again and another
    instance speaks it: the reply is completed and its speech arrives exactly once (message
    ids drop what the dead worker had already published)."""
    system = make_system(nats_server.url)
    start(system, tts={"PARLEY_BENCH_TTS_DELAY_MS": SLOW})
    bus = await Bus.connect(system.nats_url, system.env["PARLEY_PREFIX"])
    try:
        client, started = await start_assistant(system)
        await speak(client)
        call = await client.wait_type("tool.call", timeout=30)
        await client.send({"type": "tool.result", "call_id": call["call_id"], "output": {"noted": True}})
        await client.wait_type("response.text", timeout=30)  # the sentence goes to the slow TTS worker
        await replace_worker(system, bus, "tts")  # before it has spoken it
        done = await client.wait_type("response.done", timeout=60)
        assert done["status"] == "completed", done
        await bus.settle(started["session_id"], client)
        assert_replies(transcript(client), [done["response_id"]])
        log = (system.log_dir / "tools.log").read_text()
        assert "speaking sentence 0" in log and "took longer than the provider timeout" not in log  # a silent worker
        await client.close()
    finally:
        await bus.close()
    assert_clean_exit(system.stop_all())


async def test_with_every_tts_worker_gone_the_reply_is_text_with_a_warning(nats_server, make_system):
    """No TTS worker listens (the only one was killed): the turn does not wait out a timeout
    but is told at once that nobody answers, and the reply completes as text with a warning."""
    system = make_system(nats_server.url)
    start(system)
    client, _ = await start_assistant(system)
    victim = system.processes.pop("tts")
    victim.kill()
    victim.wait()
    await speak(client)
    call = await client.wait_type("tool.call", timeout=30)
    await client.send({"type": "tool.result", "call_id": call["call_id"], "output": {"noted": True}})
    done = await client.wait_type("response.done", timeout=15)
    assert done["status"] == "completed" and client.of_type("response.text")
    warning = await client.wait_type("warning", code="provider_unavailable")
    assert "speech unavailable" in warning["message"] and not client.of_type("audio.delta")
    assert "no TTS worker is listening" in (system.log_dir / "tools.log").read_text()
    await client.close()
    assert_clean_exit(system.stop_all(), "tts")

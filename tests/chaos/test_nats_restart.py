"""NATS stopped and started again (same port, same JetStream store) mid-session: every
process reconnects by itself, work in flight is finished, and the session goes on."""

from __future__ import annotations

from pathlib import Path

from shared.natsd import start_nats
from tests.chaos.support import (
    Bus,
    assert_clean_exit,
    assert_utterances,
    eventually,
    speak,
    start,
    start_translate,
    transcript,
    utterance,
    wait_done,
)


def publish_failed(log: Path) -> bool:
    """A result could not be published (tried again, or given up on)."""
    text = log.read_text(errors="replace")
    return "publish to" in text or "failed" in text.replace("Connect call failed", "")


async def test_nats_restart_mid_session_loses_nothing(make_system, tmp_path):
    nats = start_nats(log_file=open(tmp_path / "nats.log", "ab"))
    try:
        system = make_system(nats.url, PARLEY_BENCH_STT_DELAY_MS="1000")
        start(system)
        bus = await Bus.connect(system.nats_url, system.env["PARLEY_PREFIX"])
        client, started = await start_translate(system)
        ids = [utterance(started, 1, n) for n in (1, 2, 3)]
        await speak(client)
        await wait_done(client, ids[0])
        await speak(client)
        await client.wait_type("speech.stopped", utterance_id=ids[1])  # the STT owner has it all
        nats.stop()
        # Down until the STT owner has tried to publish the final (and must try again).
        await eventually(lambda: publish_failed(system.log_dir / "stt.log"), "the stt worker finds NATS gone")
        nats.restart()
        await wait_done(client, ids[1])
        await speak(client)  # the session goes on
        await wait_done(client, ids[2])
        await bus.settle(started["session_id"], client)
        assert_utterances(transcript(client), ids)
        system.check_alive()
        system.wait_ready()
        await client.close()
        await bus.close()
        assert_clean_exit(system.stop_all())
    finally:
        nats.stop()

"""Live speech translation end to end: real NATS, Redis, and every process kind as an OS process."""

from __future__ import annotations

import asyncio

import jiwer
import numpy as np

from shared.audio import add_noise_floor
from tests.support.client import ProtocolClient

TAIL_SILENCE = add_noise_floor(b"\x00\x00" * 16000)  # 1 s: lets the endpointer close the utterance


def assert_spanish_audio(pcm: bytes, rate: int = 16000) -> None:
    samples = np.frombuffer(pcm, dtype=np.int16)
    seconds = len(samples) / rate
    assert 0.5 <= seconds <= 30, f"implausible speech length {seconds:.2f} s"
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 300, "synthesized audio is silent"


def assert_seq_order(events: list[dict]) -> None:
    seqs = [e["seq"] for e in events if "seq" in e]
    assert seqs == sorted(set(seqs)), f"durable events repeated or out of order: {seqs}"


async def test_solo_english_to_spanish(parley, speech_pcm, speech_text):
    client = await ProtocolClient.connect(parley.ws_url())
    started = await client.start(language="en", target_language="es")
    assert started["type"] == "session.started", started
    await client.stream(speech_pcm + TAIL_SILENCE)
    final = await client.wait_type("transcript.final", timeout=30)
    translation = await client.wait_type("translation", timeout=15)
    done = await client.wait_type("audio.done", timeout=15)
    assert jiwer.wer(speech_text, final["text"].lower()) <= 0.35, final["text"]
    assert final["speaker"] == started["session_id"] and final["language"] == "en"
    assert translation["target_language"] == "es" and translation["text"].strip()
    assert translation["utterance_id"] == final["utterance_id"] == done["utterance_id"]
    assert_spanish_audio(client.audio(final["utterance_id"]))
    assert client.of_type("speech.started") and client.of_type("speech.stopped")
    assert_seq_order(client.events)
    await client.close()


async def test_two_person_room(parley, speech_pcm, speech_text):
    alice = await ProtocolClient.connect(parley.ws_url())
    bob = await ProtocolClient.connect(parley.ws_url("edge2"))  # rooms span edges via Redis
    a = await alice.start(language="en", room="e2e-room")
    b = await bob.start(language="es", room="e2e-room")
    assert a["type"] == b["type"] == "session.started"
    await asyncio.sleep(0.5)  # the route update reaches Alice's STT owner
    await alice.stream(speech_pcm + TAIL_SILENCE)
    for client in (alice, bob):  # both see Alice's caption
        final = await client.wait_type("transcript.final", timeout=30, speaker=a["session_id"])
        assert jiwer.wer(speech_text, final["text"].lower()) <= 0.35, final["text"]
    translation = await bob.wait_type("translation", timeout=15)
    await bob.wait_type("audio.done", timeout=15)
    assert translation["target_language"] == "es" and translation["speaker"] == a["session_id"]
    assert_spanish_audio(bob.audio())
    assert not alice.of_type("translation") and not alice.of_type("audio.delta")
    await asyncio.gather(alice.close(), bob.close())


async def test_resume_on_another_edge_loses_and_repeats_nothing(parley, speech_pcm):
    first = await ProtocolClient.connect(parley.ws_url())
    started = await first.start(language="en", target_language="es")
    # Drop before the endpointer ends the utterance (the speech ends with 300 ms of noise
    # padding): the edge finishes the utterance itself, and every result comes after.
    await first.stream(speech_pcm[: -2 * 16000 // 10])
    last_seq = max([e["seq"] for e in first.durable()], default=0)
    first.drop()
    first_seqs = [e["seq"] for e in first.durable() if e["seq"] <= last_seq]

    second = await ProtocolClient.connect(parley.ws_url("edge2"))
    await second.send({"type": "session.resume", "session_id": started["session_id"],
                       "resume_token": started["resume_token"], "last_seq": last_seq})
    resumed = await second.wait_type("session.started")
    assert resumed["resumed"] is True and resumed["session_id"] == started["session_id"]
    await second.wait_type("audio.done", timeout=30)
    replayed = [e["seq"] for e in second.durable()]
    assert all(s > last_seq for s in replayed)
    everything = first_seqs + replayed
    assert everything == sorted(set(everything)), everything
    types = {e["type"] for e in first.durable() if e["seq"] <= last_seq} | {e["type"] for e in second.durable()}
    assert {"transcript.final", "translation", "audio.delta", "audio.done"} <= types
    await second.close()


async def test_resume_with_wrong_token_is_refused(parley):
    client = await ProtocolClient.connect(parley.ws_url())
    started = await client.start(language="en", target_language="es")
    await client.close()
    other = await ProtocolClient.connect(parley.ws_url())
    await other.send({"type": "session.resume", "session_id": started["session_id"],
                      "resume_token": "not-the-token", "last_seq": 0})
    error = await other.wait_type("error")
    assert error["code"] == "session_not_found" and error["fatal"] is True
    assert (await other.closed)[0] == 4404


async def test_unsupported_pair_is_refused_at_start(parley):
    client = await ProtocolClient.connect(parley.ws_url())
    reply = await client.start(language="en", target_language="ja")
    assert reply["type"] == "error" and reply["code"] == "provider_unavailable", reply
    await client.close()

"""The edge's link to a session's STT owner, on a real NATS with a scripted owner: audio of
an utterance the edge ended is sent again when the owner, alive, has not finished it in
time (core NATS dropped a chunk on the way), and forgotten once the owner has."""

from __future__ import annotations

import asyncio

import nats

from services.edge.context import EdgeContext
from services.edge.stt_link import SttLink
from services.stt.routing import solo_route
from shared.config import Settings
from shared.messages import AudioChunk, SttClaimed, SttLease, decode, encode
from shared.state import SessionRecord
from shared.subjects import Subjects

LEASE_S = 0.6
SID = "linked"


async def eventually(check, what: str, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.05)


async def test_an_utterance_whose_end_was_lost_is_sent_again_then_forgotten(nats_server):
    nc = await nats.connect(nats_server.url)
    subjects = Subjects("link")
    owner = {"heard": [], "finished": "", "dropped": False}

    async def on_claim(msg) -> None:
        await msg.respond(encode(SttClaimed(SID, "w1", LEASE_S)))

    async def on_audio(msg) -> None:  # the owner: it never gets the first copy of the last chunk
        chunk = decode(msg.data)
        if chunk.last and not owner["dropped"]:
            owner["dropped"] = True
            return
        owner["heard"].append(chunk.index)
        if chunk.last:
            owner["finished"] = chunk.utterance_id

    async def renew() -> None:
        while True:
            await nc.publish(subjects.stt_lease(SID), encode(SttLease(SID, "w1", owner["finished"])))
            await asyncio.sleep(LEASE_S / 3)

    await nc.subscribe(subjects.stt_claim, cb=on_claim)
    await nc.subscribe(subjects.audio(SID), cb=on_audio)
    leases = asyncio.create_task(renew())
    ctx = EdgeContext(Settings(prefix="link", stt_lease_s=LEASE_S), subjects, nc, nc.jetstream(), None, None)
    record = SessionRecord(SID, "", "translate", "en", "es", None, 16000, 16000, None)
    link = SttLink(ctx, record, solo_route(SID, "es", 16000, None))
    try:
        await link.start(claim_now=True)
        for index in range(3):
            await link.send(AudioChunk(SID, f"{SID}-1", index, 16000, b"\x00\x00" * 160, last=index == 2))
        await eventually(lambda: owner["finished"] == f"{SID}-1", "the lost end, sent again")
        assert owner["heard"][:2] == [0, 1] and 2 in owner["heard"]
        await eventually(lambda: not link.unconfirmed, "the finished utterance forgotten")
        heard = len(owner["heard"])
        await asyncio.sleep(3 * LEASE_S)
        assert len(owner["heard"]) == heard  # nothing is sent again once it is finished
    finally:
        await link.stop()
        leases.cancel()
        await nc.close()

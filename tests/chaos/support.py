"""What the chaos tests share: a system of real processes, scripted speech, waiting for the
bus to settle, and the one check every test makes on the client's transcript.

The check: every expected durable event is present exactly once, in `seq` order, and
every utterance's spoken audio is there exactly once (500 ms of tone per text with the
benchmark engines, so a re-synthesis under a new message id would show as extra audio).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
from nats.js.errors import NotFoundError

from shared.audio import tone
from shared.subjects import WORKER_KINDS, Subjects
from tests.support.client import ProtocolClient
from tests.support.system import ParleySystem

RATE = 16000
UTTERANCE = tone(220, 1.0, RATE) + b"\x00\x00" * (RATE // 2)  # 1 s of speech, then the end of it
REPLY_AUDIO_BYTES = RATE * 2 // 2  # the benchmark TTS speaks 500 ms of PCM16 per text
TRANSLATE_KINDS = ("transcript.final", "translation", "audio.done")
WAIT_S = 45.0


def chaos_system(nats_url: str, log_dir: Path, prefix: str, redis_url: str | None = None,
                 **env: str) -> ParleySystem:
    """A system on the benchmark engines; `env` sets PARLEY_* knobs for every process."""
    return ParleySystem(nats_url, redis_url, "bench", log_dir,
                        env={"PARLEY_PREFIX": prefix, "PARLEY_RESUME_WINDOW_S": "60", **env})


def start(system: ParleySystem, edges: tuple[str, ...] = ("edge",), **instance_env: dict) -> None:
    """One worker of every kind (`instance_env[kind]`: env for that one) and the edges."""
    for kind in WORKER_KINDS:
        system.start_worker(kind, env=instance_env.get(kind))
    for edge in edges:
        system.start_edge(edge)
    for edge in edges:
        system.wait_ready(edge)


async def eventually(check: Callable[[], Awaitable[bool]] | Callable[[], bool], what: str,
                     timeout_s: float = WAIT_S) -> None:
    """Wait for a condition (polled; no fixed sleeps in the tests themselves)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.1)


async def start_translate(system: ParleySystem, edge: str = "edge") -> tuple[ProtocolClient, dict]:
    client = await ProtocolClient.connect(system.ws_url(edge))
    started = await client.start(language="en", target_language="es")
    assert started["type"] == "session.started", started
    return client, started


NOTE_TOOL = {  # the local keyword engine calls it for "utterance <n>", with number = n
    "name": "note_utterance", "description": "Note an utterance",
    "parameters": {"type": "object", "properties": {"number": {"type": "integer"}}, "required": ["number"]},
    "timeout_ms": 20000,
}


async def start_assistant(system: ParleySystem) -> tuple[ProtocolClient, dict]:
    """An assistant session with NOTE_TOOL, which the local keyword engine calls each turn."""
    client = await ProtocolClient.connect(system.ws_url())
    started = await client.start(mode="assistant", language="en", tools=[NOTE_TOOL])
    assert started["type"] == "session.started", started
    return client, started


async def speak(client: ProtocolClient, pcm: bytes = UTTERANCE) -> None:
    await client.stream(pcm, realtime=False)


def utterance(started: dict, generation: int, n: int) -> str:
    return f"{started['session_id']}-{generation}-{n}"


async def wait_done(client: ProtocolClient, utterance_id: str, kind: str = "audio.done") -> dict:
    return await client.wait_type(kind, timeout=WAIT_S, utterance_id=utterance_id)



class Bus:
    """A test's own NATS connection, to watch the work queue and the out-stream."""

    def __init__(self, nc, subjects: Subjects) -> None:
        self.nc, self.js, self.subjects = nc, nc.jetstream(), subjects

    @classmethod
    async def connect(cls, url: str, prefix: str) -> "Bus":
        servers = [u for u in url.split(",") if u]
        return cls(await nats.connect(servers=servers, max_reconnect_attempts=-1, reconnect_time_wait=0.2),
                   Subjects(prefix))

    async def close(self) -> None:
        await self.nc.close()

    async def held(self, kind: str) -> int:
        """Units of `kind` work a worker has taken and not yet acked."""
        try:
            return (await self.js.consumer_info(self.subjects.work_stream, kind, timeout=2)).num_ack_pending
        except NotFoundError:
            return 0

    async def work_in_flight(self, kind: str) -> int:
        """Units of `kind` work delivered and not yet acked, plus those not yet delivered."""
        try:
            info = await self.js.consumer_info(self.subjects.work_stream, kind, timeout=2)
        except NotFoundError:
            return 0
        return info.num_ack_pending + info.num_pending

    async def idle(self) -> bool:
        try:
            return all([await self.work_in_flight(kind) == 0 for kind in ("translate", "tts", "tools")])
        except Exception:  # NATS still coming back
            return False

    async def last_seq(self, sid: str) -> int:
        try:
            return (await self.js.get_last_msg(self.subjects.out_stream, self.subjects.out(sid))).seq
        except NotFoundError:
            return 0

    async def instances(self, kind: str) -> list[dict]:
        """Every running instance of a worker kind, by its micro-service INFO."""
        inbox = self.nc.new_inbox()
        answers: list[dict] = []

        async def on_answer(msg) -> None:
            answers.append(json.loads(msg.data))

        sub = await self.nc.subscribe(inbox, cb=on_answer)
        await self.nc.publish(f"$SRV.INFO.{self.subjects.service_name(kind)}", b"", reply=inbox)
        await self.nc.flush()
        await asyncio.sleep(0.3)  # gathering answers from an unknown number of instances
        await sub.unsubscribe()
        return answers

    async def settle(self, sid: str, *clients: ProtocolClient) -> None:
        """Until no work is queued or in flight (a dead worker's work has been redone) and
        the client holds everything the out-stream has for it."""
        await eventually(self.idle, "every work item acked")
        last = await self.last_seq(sid)
        await eventually(lambda: max_seq(*clients) >= last, f"the client got seq {last}")
        await eventually(self.idle, "every work item acked (after delivery)")


def max_seq(*clients: ProtocolClient) -> int:
    return max([e["seq"] for c in clients for e in c.durable()], default=0)


def transcript(*connections: ProtocolClient) -> list[dict]:
    """The durable events one session received over successive connections."""
    return [e for c in connections for e in c.durable()]


def assert_in_order_once(events: list[dict]) -> None:
    seqs = [e["seq"] for e in events]
    repeated = [s for s, n in Counter(seqs).items() if n > 1]
    assert not repeated, f"seq delivered twice: {repeated}"
    assert seqs == sorted(seqs), f"seq out of order: {seqs}"


def assert_utterances(events: list[dict], utterance_ids: list[str], kinds=TRANSLATE_KINDS) -> None:
    """Each utterance's `kinds` exactly once, in that order, and its speech exactly once."""
    assert_in_order_once(events)
    for uid in utterance_ids:
        mine = [e for e in events if e.get("utterance_id") == uid]
        found = [e["type"] for e in mine if e["type"] in kinds]
        assert sorted(found) == sorted(kinds), f"{uid}: expected {kinds} once each, got {found}"
        assert found == list(kinds), f"{uid}: out of order {found}"
        if "audio.done" in kinds:
            assert audio_bytes(mine) == REPLY_AUDIO_BYTES, f"{uid}: {audio_bytes(mine)} bytes of speech"
    finals = {e["utterance_id"] for e in events if e["type"] == "transcript.final"}
    assert finals == set(utterance_ids), f"unexpected utterances: {finals - set(utterance_ids)}"


def assert_replies(events: list[dict], response_ids: list[str]) -> None:
    """Each assistant reply: one tool.call per call id, each sentence once, one audio.done,
    one response.done, and the speech of every sentence exactly once."""
    assert_in_order_once(events)
    for rid in response_ids:
        mine = [e for e in events if e.get("response_id") == rid]
        calls = Counter(e["call_id"] for e in mine if e["type"] == "tool.call")
        assert calls and all(n == 1 for n in calls.values()), f"{rid}: tool calls {calls}"
        texts = Counter(e["index"] for e in mine if e["type"] == "response.text")
        assert texts and all(n == 1 for n in texts.values()), f"{rid}: sentences {texts}"
        for kind in ("audio.done", "response.done"):
            assert [e["type"] for e in mine].count(kind) == 1, f"{rid}: {kind} not once"
        assert audio_bytes(mine) == REPLY_AUDIO_BYTES * len(texts), f"{rid}: {audio_bytes(mine)} bytes"
    done = {e["response_id"] for e in events if e["type"] == "response.done"}
    assert done == set(response_ids), f"unexpected replies: {done}"


def audio_bytes(events: list[dict]) -> int:
    return sum(len(base64.b64decode(e["audio"])) for e in events if e["type"] == "audio.delta")


def assert_clean_exit(codes: dict[str, int], *killed: str) -> None:
    """Every process that was not killed on purpose drained and exited 0."""
    unclean = {name: code for name, code in codes.items() if name not in killed and code != 0}
    assert not unclean, f"unclean exits: {unclean}"

"""The browser SDK (services/edge/web/parley.js) in headless Chromium.

Most tests run it against a scripted fake edge in this process, which serves /parley.js
and plays the server's side of the protocol step by step, so replays, drops and close
codes happen exactly when the test says. The last one runs it against a real Parley.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.e2e.test_web_page import CHROMIUM, CHROMIUM_ARGS

WEB_ROOT = Path(__file__).resolve().parents[2] / "services" / "edge" / "web"
STEP_S = 15.0  # longest a scripted step may wait for the page (generous: CI machines are shared)

# ---------------------------------------------------------------- browser


@dataclass
class Browsed:
    page: Page
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions


@asynccontextmanager
async def chromium(fake_mic_wav: str | None = None) -> AsyncIterator[Browsed]:
    """A headless Chromium page; with a WAV, that file is the microphone (in a loop)."""
    args = list(CHROMIUM_ARGS)
    if fake_mic_wav:
        args += ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={fake_mic_wav}"]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = await browser.new_page()
            b = Browsed(page)
            page.on("console", lambda m: m.type == "error" and b.errors.append(m.text))
            page.on("pageerror", lambda e: b.errors.append(f"uncaught: {e}"))
            yield b
        finally:
            await browser.close()


async def poll(page: Page, js: str, done: Callable[[Any], bool], what: str, wait_s: float = STEP_S) -> Any:
    """Evaluates `js` until `done(value)`; fails naming `what` after `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        value = await page.evaluate(js)
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {wait_s:.0f} s; last value: {value!r}")
        await asyncio.sleep(0.05)


# The page side: a client whose every event is logged (without audio payloads) in
# window.log, with one function `add` that counts its runs in window.calls.
SETUP_JS = """async ({url, mode}) => {
  const { ParleyClient } = await import("/parley.js");
  window.log = [];
  window.calls = [];
  const client = new ParleyClient({url, mode, language: "en", targetLanguage: "es"});
  client.on("*", ({audio, ...rest}) => window.log.push(rest));
  client.registerFunction("add", ({a, b}) => { window.calls.push([a, b]); return a + b; },
    {type: "object", properties: {a: {type: "number"}, b: {type: "number"}}, required: ["a", "b"]},
    {description: "adds two numbers", timeoutMs: 2000});
  window.client = client;
  window.connected = client.connect().then((ev) => ev.session_id, (err) => "rejected: " + err.message);
}"""
LOG_JS = "window.log"


def seqs(log: list[dict]) -> list[int]:
    return [ev["seq"] for ev in log if "seq" in ev]


def states(log: list[dict]) -> list[str]:
    return [ev["state"] for ev in log if ev["type"] == "state"]


# ---------------------------------------------------------------- fake edge


class Conn:
    """One WebSocket connection to the fake edge, driven by the test."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()
        self.binary_frames = 0

    async def recv(self, *types: str) -> dict:
        """The next text message of one of `types` (others are skipped)."""
        async with asyncio.timeout(STEP_S):
            while True:
                msg = await self.inbox.get()
                if msg["type"] in types:
                    return msg

    async def send(self, **event: Any) -> None:
        await self.ws.send(json.dumps(event))

    async def started(self, session_id: str = "s1", resumed: bool = False) -> None:
        await self.send(type="session.started", session_id=session_id, resume_token="t-" + session_id,
                        resumed=resumed, mode="assistant", language="en", output_sample_rate=16000)


class FakeEdge:
    def __init__(self) -> None:
        self.connections: asyncio.Queue[Conn] = asyncio.Queue()
        self.url = ""

    async def next_connection(self, wait_s: float = STEP_S) -> Conn:
        async with asyncio.timeout(wait_s):
            return await self.connections.get()

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/v1/stream":
            return None
        file = WEB_ROOT / path.lstrip("/")
        if path == "/":
            body, kind = b'<!doctype html><link rel="icon" href="data:,"><title>sdk test</title>', "text/html"
        elif path.endswith(".js") and file.is_file():
            body, kind = file.read_bytes(), "text/javascript"
        else:
            return Response(404, "Not Found", Headers([("Content-Length", "0")]), b"")
        headers = Headers([("Content-Type", kind), ("Content-Length", str(len(body)))])
        return Response(HTTPStatus.OK.value, "OK", headers, body)

    async def handler(self, ws: ServerConnection) -> None:
        conn = Conn(ws)
        await self.connections.put(conn)
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    conn.binary_frames += 1
                else:
                    await conn.inbox.put(json.loads(message))
        except ConnectionClosed:
            pass  # the test dropped it


@pytest.fixture
async def fake_edge() -> AsyncIterator[FakeEdge]:
    edge = FakeEdge()
    async with serve(edge.handler, "127.0.0.1", 0, process_request=edge.process_request) as server:
        port = server.sockets[0].getsockname()[1]
        edge.url = f"http://127.0.0.1:{port}"
        yield edge


@pytest.fixture
async def page(fake_edge: FakeEdge) -> AsyncIterator[Page]:
    """A browser page; closed before the fake edge stops, so the client never sees it gone."""
    async with chromium() as b:
        yield b.page
        assert b.errors == []


async def open_client(page: Page, edge: FakeEdge, mode: str = "assistant") -> Conn:
    await page.goto(edge.url + "/")
    await page.evaluate(SETUP_JS, {"url": edge.url + "/v1/stream", "mode": mode})
    return await edge.next_connection()


# ---------------------------------------------------------------- tests


async def test_tools_run_once_and_resume_delivers_each_event_once_in_order(
    page: Page, fake_edge: FakeEdge
) -> None:
    conn = await open_client(page, fake_edge)
    start = await conn.recv("session.start")
    assert start["mode"] == "assistant"
    assert start["tools"] == [{"name": "add", "description": "adds two numbers", "timeout_ms": 2000,
                               "parameters": {"type": "object", "required": ["a", "b"], "properties": {
                                   "a": {"type": "number"}, "b": {"type": "number"}}}}]
    await conn.started()
    assert await page.evaluate("window.connected") == "s1"

    await conn.send(type="tool.call", seq=1, call_id="c1", name="add", arguments={"a": 2, "b": 3},
                    response_id="r1")
    assert await conn.recv("tool.result") == {"type": "tool.result", "call_id": "c1", "output": 5}
    await conn.send(type="tool.call", seq=2, call_id="c2", name="nope", arguments={}, response_id="r1")
    unknown = await conn.recv("tool.result")
    assert unknown["call_id"] == "c2" and "nope" in unknown["error"] and "output" not in unknown
    await conn.send(type="response.text", seq=3, response_id="r1", text="Five.")
    assert (await conn.recv("ack"))["seq"] == 3

    # Functions registered after the start are sent as tool.register / tool.unregister.
    await page.evaluate("window.client.registerFunction('noop', () => null, undefined, {description: 'x'})")
    assert (await conn.recv("tool.register"))["name"] == "noop"
    await page.evaluate("window.client.unregisterFunction('noop')")
    assert await conn.recv("tool.unregister") == {"type": "tool.unregister", "name": "noop"}

    conn.ws.transport.abort()  # the network fails: no close frame
    conn = await fake_edge.next_connection()
    resume = await conn.recv("session.resume")
    assert resume == {"type": "session.resume", "session_id": "s1", "resume_token": "t-s1", "last_seq": 3}
    await conn.started(resumed=True)
    # A replay of what the client already holds, then the unanswered call again (same
    # call_id, new seq, as the edge does when it never got the result), then news.
    await conn.send(type="tool.call", seq=2, call_id="c2", name="nope", arguments={}, response_id="r1")
    await conn.send(type="response.text", seq=3, response_id="r1", text="Five.")
    await conn.send(type="tool.call", seq=5, call_id="c1", name="add", arguments={"a": 2, "b": 3},
                    response_id="r1")
    assert await conn.recv("tool.result") == {"type": "tool.result", "call_id": "c1", "output": 5}
    await conn.send(type="response.done", seq=6, response_id="r1", status="completed", text="Five.")

    log = await poll(page, LOG_JS, lambda log: 6 in seqs(log), "response.done after the resume")
    assert seqs(log) == [1, 2, 3, 5, 6]
    assert await page.evaluate("window.calls") == [[2, 3]]  # c1 ran once
    started = [ev["resumed"] for ev in log if ev["type"] == "session.started"]
    assert started == [False, True]
    assert states(log) == ["connecting", "open", "reconnecting", "open"]
    executed = [(ev["call_id"], ev.get("output"), ev.get("error") is not None) for ev in log if ev["type"] == "tool.executed"]
    assert executed == [("c1", 5, False), ("c2", None, True)]


async def test_a_tool_that_throws_answers_with_its_message(page: Page, fake_edge: FakeEdge) -> None:
    conn = await open_client(page, fake_edge)
    await conn.recv("session.start")
    await conn.started()
    await page.evaluate("""window.client.registerFunction('fail', async () => {
        await new Promise((r) => setTimeout(r, 50)); throw new Error('no such order'); },
        {type: 'object', properties: {}}, {description: 'fails'})""")
    await conn.recv("tool.register")
    await conn.send(type="tool.call", seq=1, call_id="c9", name="fail", arguments={})
    assert await conn.recv("tool.result") == {"type": "tool.result", "call_id": "c9", "error": "no such order"}


def pcm_b64(samples: int) -> str:
    return base64.b64encode(b"\x10\x00" * samples).decode()


async def test_cancel_stops_the_reply_and_drops_its_late_audio(page: Page, fake_edge: FakeEdge) -> None:
    conn = await open_client(page, fake_edge)
    await conn.recv("session.start")
    await conn.started()
    await conn.send(type="response.text", seq=1, response_id="r1", text="A long story.")
    await conn.send(type="audio.delta", seq=2, utterance_id="u1", response_id="r1", audio=pcm_b64(3200))
    await poll(page, "window.client.stats.scheduledSamples", lambda n: n == 3200, "scheduled audio")

    queued = await page.evaluate("window.client.cancelResponse(), window.client._player.sources.size")
    assert queued == 0  # silenced at once, not when the edge confirms
    await conn.recv("response.cancel")
    await conn.send(type="audio.delta", seq=3, utterance_id="u1", response_id="r1", audio=pcm_b64(3200))
    await conn.send(type="response.done", seq=4, response_id="r1", status="cancelled", text="A long")
    await conn.send(type="audio.delta", seq=5, utterance_id="u2", response_id="r2", audio=pcm_b64(1600))

    stats = await poll(page, "window.client.stats", lambda s: s["receivedSamples"] == 8000, "all audio")
    assert stats["scheduledSamples"] == 3200 + 1600  # r1's late chunk was not played


async def test_draining_edge_resumes_at_once_and_a_lost_session_gives_up(
    page: Page, fake_edge: FakeEdge
) -> None:
    conn = await open_client(page, fake_edge)
    await conn.recv("session.start")
    await conn.started()
    await conn.send(type="speech.started", seq=7, utterance_id="u1")
    await conn.ws.close(4503, "draining")
    conn = await fake_edge.next_connection()
    assert (await conn.recv("session.resume"))["last_seq"] == 7
    retry = [ev for ev in await page.evaluate(LOG_JS) if ev.get("state") == "reconnecting"]
    assert retry[0]["code"] == 4503 and retry[0]["retry_in_ms"] == 0  # no backoff for a draining edge

    await conn.send(type="error", code="session_not_found", message="no such session", fatal=True)
    await conn.ws.close(4404, "session not found")
    log = await poll(page, LOG_JS, lambda log: "closed" in states(log), "closed state")
    assert [ev["type"] for ev in log][-3:] == ["error", "session.lost", "state"]
    assert log[-1] == {"type": "state", "state": "closed", "code": 4404}
    with pytest.raises(TimeoutError):
        await fake_edge.next_connection(wait_s=1.5)  # gave up: no further attempt


async def test_end_sends_session_end_and_closes(page: Page, fake_edge: FakeEdge) -> None:
    conn = await open_client(page, fake_edge)
    await conn.recv("session.start")
    await conn.started()
    assert await page.evaluate("window.connected") == "s1"  # open: end() now says session.end
    await page.evaluate("() => { window.ended = window.client.end(); }")
    await conn.recv("session.end")
    await conn.send(type="session.ended", seq=1, reason="client")
    await conn.ws.close(1000)
    await page.evaluate("window.ended")
    log = await page.evaluate(LOG_JS)
    assert states(log)[-1] == "closed"
    assert [ev["type"] for ev in log if ev["type"] != "state"] == ["session.started", "session.ended"]


async def test_failed_start_rejects_connect(page: Page, fake_edge: FakeEdge) -> None:
    conn = await open_client(page, fake_edge)
    await conn.recv("session.start")
    await conn.send(type="error", code="provider_unavailable", message="no recogniser for xx", fatal=True)
    await conn.ws.close(1000)
    assert await page.evaluate("window.connected") == "rejected: provider_unavailable: no recogniser for xx"


# ---------------------------------------------------------------- against Parley


async def test_sdk_resumes_a_real_session_without_repeats(parley_url: str, speech_wav: str) -> None:
    async with chromium(speech_wav) as b:
        page = b.page
        await page.goto(parley_url + "/")  # any page of the edge: same origin
        await page.evaluate(SETUP_JS, {"url": None, "mode": "translate"})
        assert not (await page.evaluate("window.connected")).startswith("rejected")
        await page.evaluate("window.client.startMicrophone()")

        def finals(log: list[dict]) -> int:
            return sum(ev["type"] == "transcript.final" for ev in log)

        await poll(page, LOG_JS, lambda log: finals(log) >= 1, "first final transcript", 60)
        await page.evaluate("window.client.dropConnection()")
        log = await poll(page, LOG_JS, lambda log: finals(log) >= 3, "finals after the resume", 60)

        started = [ev for ev in log if ev["type"] == "session.started"]
        assert [ev["resumed"] for ev in started] == [False, True]
        assert len({ev["session_id"] for ev in started}) == 1
        got = seqs(log)
        assert got == sorted(set(got)), f"repeated or reordered: {got}"
        assert states(log) == ["connecting", "open", "reconnecting", "open"]
        assert await page.evaluate("window.client.stats.sentSamples") > 0
        assert await poll(page, "window.client.ackedSeq", lambda n: n > 0, "an ack")
        await page.evaluate("window.client.end()")
        assert b.errors == []

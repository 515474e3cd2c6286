"""The assistant demo page (assistant.html) in headless Chromium against a running Parley.

Chromium's fake microphone says "please make the background blue" (then a long pause, in a
loop). With no LLM key configured the assistant is Parley's local keyword engine, which
calls a registered tool whose name the words mention with an `enum` value they contain:
here the page's own `set_background_color`, which runs in the page.
"""

from __future__ import annotations

import asyncio
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.test_sdk import Browsed, chromium
from tests.speech import synthesize_speech

SENTENCE = "please make the background blue"
PAUSE_S = 5.0  # after the sentence: time for the reply to be spoken before the loop speaks again
WAIT_S = 90.0  # the fake microphone repeats the sentence; some repetitions are misheard
BLUE = "rgb(0, 0, 255)"

SNAPSHOT_JS = """() => {
  const texts = (sel) => [...document.querySelectorAll(sel)]
    .map((e) => e.textContent.trim()).filter(Boolean);
  const a = window.assistant;
  return {
    state: a.state,
    background: getComputedStyle(document.body).backgroundColor,
    said: texts("#transcript li.final .text"),
    replies: texts("#replies li .text"),
    tools: [...document.querySelectorAll("#tool-log li")].map((li) => ({
      name: li.dataset.name, call: li.querySelector(".text").textContent,
      result: li.querySelector(".result")?.textContent ?? null})),
    notices: texts("#notices li"),
    audioSamples: a.client ? a.client.stats.receivedSamples : 0,
    events: a.events.map(({type, seq, text, name, arguments: args, status, code, message}) =>
      ({type, seq, text, name, args, status, code, message})),
  };
}"""


@pytest.fixture(scope="module")
def blue_wav(tmp_path_factory) -> str:
    pcm = synthesize_speech(SENTENCE, sample_rate=16000)
    path = tmp_path_factory.mktemp("assistant") / "blue.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(pcm + b"\x00\x00" * int(16000 * PAUSE_S))
    return str(path)


@pytest.fixture
async def browsed(blue_wav: str, tmp_path: Path) -> AsyncIterator[Browsed]:
    async with chromium(blue_wav) as b:
        yield b
        shot = tmp_path / "assistant_page.png"
        await b.page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")


def describe(snap: dict) -> str:
    lines = [f"{k}: {snap[k]!r}" for k in snap if k != "events"]
    lines.append(f"last events: {snap['events'][-12:]!r}")
    return "\n".join(lines)


def blue_call(snap: dict) -> dict | None:
    return next((t for t in snap["tools"] if t["name"] == "set_background_color"
                 and '"color":"blue"' in t["call"] and t["result"]), None)


def done(snap: dict) -> bool:
    replied = any(ev["type"] == "response.done" for ev in snap["events"])
    return bool(blue_call(snap) and snap["background"] == BLUE  # after the CSS transition
                and snap["replies"] and snap["audioSamples"] > 0 and replied)


async def test_assistant_page_runs_the_pages_function_and_answers(browsed: Browsed, parley_url: str) -> None:
    page = browsed.page
    await page.goto(parley_url + "/assistant.html")
    await page.click("#start")

    deadline = time.monotonic() + WAIT_S
    while not done(snap := await page.evaluate(SNAPSHOT_JS)):
        if time.monotonic() > deadline:
            pytest.fail(f"no blue background call + reply + audio within {WAIT_S:.0f} s\n"
                        f"{describe(snap)}\nconsole errors: {browsed.errors}")
        await asyncio.sleep(0.25)

    call = blue_call(snap)
    assert '"ok":true' in call["result"], describe(snap)
    assert snap["state"] == "open", describe(snap)
    assert not [ev for ev in snap["events"] if ev["type"] == "error"], describe(snap)
    assert any(ev["type"] == "tool.call" and ev["args"] == {"color": "blue"} for ev in snap["events"])
    seqs = [ev["seq"] for ev in snap["events"] if ev["seq"] is not None]
    assert seqs == sorted(set(seqs)), f"seq not strictly increasing: {seqs}"
    assert browsed.errors == []

    await page.click("#end")
    await page.wait_for_function("window.assistant.state === 'closed'", timeout=10_000)

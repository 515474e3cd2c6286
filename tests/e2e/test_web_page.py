"""The web demo in headless Chromium against a running Parley.

Chromium's fake microphone plays `speech_wav` (in a loop), so the page captures real
English speech through getUserMedia and its AudioWorklet, exactly as it would a person.
Fixtures `parley_url`, `speech_wav` and `speech_text` come from tests/e2e/conftest.py.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright

CHROMIUM = "/usr/bin/chromium"  # Debian's; playwright cannot download browsers here
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
WAIT_S = 60.0

# Everything the test looks at, read from the page in one round trip.
SNAPSHOT_JS = """() => {
  const texts = (sel) => [...document.querySelectorAll(sel)]
    .map((e) => e.textContent.trim()).filter(Boolean);
  const p = window.parley;
  return {
    state: p.state,
    sessionId: p.sessionId,
    lastSeq: p.lastSeq,
    ackedSeq: p.ackedSeq,
    reconnects: p.reconnects,
    playedSamples: p.playedSamples,
    sentSamples: p.sentSamples,
    finals: texts("#captions li.final .text"),
    translations: texts('#translations li[lang|="es"] .text'),
    notices: texts("#notices li"),
    events: p.events.map(({audio, ...rest}) => rest),  // without the audio payloads
  };
}"""


@dataclass
class Browsed:
    page: Page
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions


@pytest.fixture
async def browsed(speech_wav: str, tmp_path: Path) -> AsyncIterator[Browsed]:
    fake_mic = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={speech_wav}",
    ]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS + fake_mic
        )
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 800})
            b = Browsed(page)
            page.on("console", lambda m: m.type == "error" and b.errors.append(m.text))
            page.on("pageerror", lambda e: b.errors.append(f"uncaught: {e}"))
            yield b
            shot = tmp_path / "web_page.png"
            await page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
        finally:
            await browser.close()


async def start_translating(page: Page, parley_url: str) -> None:
    await page.goto(parley_url + "/")
    await page.select_option("#language", "en")
    await page.select_option("#target", "es")
    await page.fill("#room", "")
    await page.click("#start")


async def wait_until(page: Page, done: Callable[[dict], bool], what: str, context: str) -> dict:
    deadline = time.monotonic() + WAIT_S
    while True:
        snap = await page.evaluate(SNAPSHOT_JS)
        if done(snap):
            return snap
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {WAIT_S:.0f} s\n{describe(snap)}\n{context}")
        await asyncio.sleep(0.25)


def describe(snap: dict) -> str:
    counts: dict[str, int] = {}
    for ev in snap["events"]:
        counts[ev["type"]] = counts.get(ev["type"], 0) + 1
    lines = [f"{k}: {snap[k]!r}" for k in snap if k != "events"]
    lines.append(f"event counts: {counts}")
    lines.append(f"last events: {snap['events'][-8:]!r}")
    return "\n".join(lines)


def translated_and_spoken(snap: dict) -> bool:
    return bool(
        snap["finals"] and snap["translations"] and snap["playedSamples"] > 0
        and snap["ackedSeq"] > 0
    )


def durable_seqs(snap: dict) -> list[int]:
    return [ev["seq"] for ev in snap["events"] if "seq" in ev]


async def test_page_captions_translates_and_speaks(
    browsed: Browsed, parley_url: str, speech_text: str
) -> None:
    await start_translating(browsed.page, parley_url)

    snap = await wait_until(
        browsed.page, translated_and_spoken,
        "final caption + Spanish translation + played audio + ack",
        f"reference text: {speech_text!r}\nconsole errors: {browsed.errors}",
    )

    assert snap["state"] == "live", describe(snap)
    assert snap["sentSamples"] > 0
    assert not [ev for ev in snap["events"] if ev["type"] == "error"], describe(snap)
    seqs = durable_seqs(snap)
    assert seqs == sorted(set(seqs)), f"seq not strictly increasing: {seqs}"
    assert browsed.errors == []

    await browsed.page.click("#stop")
    await wait_until(browsed.page, lambda s: s["state"] == "stopped", "stopped state", "")


async def test_page_resumes_after_a_dropped_connection(
    browsed: Browsed, parley_url: str
) -> None:
    page = browsed.page
    await start_translating(page, parley_url)
    before = await wait_until(page, lambda s: bool(s["finals"]), "first final caption", "")

    await page.evaluate("window.parley.dropConnection()")
    after = await wait_until(
        page,
        lambda s: s["reconnects"] >= 1 and s["state"] == "live"
        and len(s["finals"]) > len(before["finals"]),
        "resumed session with a new final caption",
        f"before the drop:\n{describe(before)}",
    )

    started = [ev for ev in after["events"] if ev["type"] == "session.started"]
    assert [ev["resumed"] for ev in started] == [False, True], describe(after)
    assert {ev["session_id"] for ev in started} == {before["sessionId"]}
    seqs = durable_seqs(after)
    assert seqs == sorted(set(seqs)), f"replay repeated or reordered events: {seqs}"
    assert browsed.errors == []

"""Soak: N sessions talk for minutes while faults are injected on a schedule (issue 5).

Not a timed test: it reports, it does not assert. Its own nats-server (restartable, with a
store dir) and redis-server, and a Parley system on the benchmark engines with two edges
and two instances of each worker kind (`<kind>-a`, `<kind>-b`), so a killed instance has a
peer. Sessions alternate between translate (en → es) and assistant (the local keyword
engine, which calls the session's one tool for "utterance <n>"; the client answers it at
once). Each speaks `tests.chaos.support.UTTERANCE` (1 s tone, 0.5 s silence) every
`--period-s`; an assistant session waits for its reply (plus its audio's time) first, so
it never barges in. A session whose connection drops resumes with `last_seq`, on the other
edge first.

Every `--fault-every-s` the next fault of the cycle is injected (always on the `-a`
instance, so the `-b` instances live the whole run and show memory over all of it):
SIGKILL of an stt / translate / tts / tools worker, restarted `--restart-after-s` later as
an orchestrator would; SIGKILL of an edge (restarted likewise); NATS stopped and started
(same port and store) after `--nats-down-s`; Redis stopped for `--redis-down-s`.

After the run the sessions stop speaking and the run drains: until every session is
connected, every work queue idle, every client holds the last `seq` of its out-stream and
every expected utterance is complete (or `--drain-s` passed). Then, per session:
- expected utterances: those the edge ended (`speech.stopped`) or any result names; audio
  cut by a lost connection before the edge ended it is not expected (ARCHITECTURE.md);
- lost: an expected utterance's missing `transcript.final` / `translation` / `audio.done`
  (assistant: `transcript.final` / `response.done`);
- duplicated: a `seq` delivered twice, or a once-only event (final, translation,
  audio.done, response.done, tool.call by call id, response.text by index) twice;
- speech exactly once: 500 ms of PCM per spoken text (as the chaos tests check);
- recovery per fault: for each affected session (an utterance in flight at the fault, or
  its connection lost within 3 s of it), fault → the moment its in-flight utterances are
  all complete and it has completed one utterance after the fault. The same measure taken
  5 s before each fault, when nothing is wrong, is the `control`.
Memory: VmRSS of every process (each incarnation of a restarted one apart) every
`--sample-s`; the slope after `--warmup-s` of its life, by least squares, in MiB/min.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench import procstat
from bench.level import LOADGEN, wait_for_quiet
from bench.report import RESULTS_DIR, machine, write_json
from bench.soak_report import account, print_report, recoveries, session_summary, totals_of
from bench.soak_rig import EDGES, Memory, Rig, fault_schedule, start_rig, stop_rig
from tests.chaos.support import NOTE_TOOL, UTTERANCE, Bus

FRAME_BYTES = 640  # 20 ms of 16 kHz PCM16
FRAMES = tuple(UTTERANCE[i:i + FRAME_BYTES] for i in range(0, len(UTTERANCE), FRAME_BYTES))
FAULTS = ("stt", "translate", "tts", "tools", "edge", "nats", "redis")


# -- one session ---------------------------------------------------------------------------
class Soaker:
    """A scripted session: keeps a connection (start, then resume), speaks, answers tools."""

    def __init__(self, index: int, mode: str, system, t0: float, offset_s: float, period_s: float) -> None:
        self.index, self.mode, self.system, self.t0 = index, mode, system, t0
        self.offset_s, self.period_s = offset_s, period_s
        self.edge = EDGES[index % len(EDGES)]
        self.events: list[dict] = []
        self.links: list[dict] = []  # one per connection: edge, opened/closed (s), close code
        self.sid = self.token = None
        self.max_seq = 0
        self.fatal: str | None = None
        self.spoken = self.cut = 0
        self.up = asyncio.Event()
        self.ws: ClientConnection | None = None
        self.ending = False
        self._answered: set[tuple] = set()

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def keep_connected(self) -> None:
        while not self.fatal and not self.ending:
            ws = await self._open()
            if ws is None:
                return
            self.ws = ws
            self.up.set()
            await self._read(ws, len(self.links) - 1)
            self.up.clear()
            self.ws = None
            self.links[-1].update(closed_s=round(self.now(), 3), code=ws.close_code)

    async def _open(self) -> ClientConnection | None:
        """Start, or resume on the other edge first; edges in turn until one answers."""
        resuming = self.sid is not None
        first = (EDGES.index(self.edge) + resuming) % len(EDGES)
        order = EDGES[first:] + EDGES[:first]
        deadline = time.monotonic() + 60
        for attempt in range(10_000):
            edge = order[attempt % len(order)]
            try:
                ws = await connect(self.system.ws_url(edge), max_size=None, open_timeout=5)
                if await self._hello(ws, resuming):
                    self.edge = edge
                    self.links.append({"edge": edge, "opened_s": round(self.now(), 3), "resumed": resuming})
                    return ws
                await ws.close()
            except (OSError, ConnectionClosed, TimeoutError, asyncio.TimeoutError):
                pass
            if self.fatal or time.monotonic() > deadline:
                self.fatal = self.fatal or "could not connect to any edge for 60 s"
                return None
            await asyncio.sleep(0.2)
        return None

    async def _hello(self, ws: ClientConnection, resuming: bool) -> bool:
        if resuming:
            await ws.send(json.dumps({"type": "session.resume", "session_id": self.sid,
                                      "resume_token": self.token, "last_seq": self.max_seq}))
        else:
            start = ({"mode": "translate", "language": "en", "target_language": "es"} if self.mode == "translate"
                     else {"mode": "assistant", "language": "en", "tools": [NOTE_TOOL]})
            await ws.send(json.dumps({"type": "session.start", **start}))
        async with asyncio.timeout(10):
            while True:
                event = json.loads(await ws.recv())
                if event.get("type") == "session.started":
                    self.sid, self.token = event["session_id"], event["resume_token"]
                    return True
                await self._on(event, len(self.links), ws)
                if event.get("type") == "error" and event.get("fatal"):
                    self.fatal = f"{event.get('code')}: {event.get('message')}"
                    return False

    async def _read(self, ws: ClientConnection, link: int) -> None:
        try:
            async for message in ws:
                await self._on(json.loads(message), link, ws)
        except ConnectionClosed:
            pass

    async def _on(self, event: dict, link: int, ws: ClientConnection) -> None:
        kind = event.get("type")
        rec = {"t": round(self.now(), 4), "type": kind, "link": link}
        for key in ("seq", "utterance_id", "response_id", "call_id", "status", "index", "code"):
            if key in event:
                rec[key] = event[key]
        if kind == "audio.delta":
            rec["bytes"] = len(base64.b64decode(event["audio"]))
        if "seq" in event:
            self.max_seq = max(self.max_seq, event["seq"])
        if kind == "session.ended" and not self.ending:
            self.fatal = f"session.ended: {event.get('reason')}"
        self.events.append(rec)
        key = (event.get("response_id"), event.get("call_id"))
        if kind == "tool.call" and key not in self._answered:  # answer each call once
            self._answered.add(key)
            try:
                await ws.send(json.dumps({"type": "tool.result", "call_id": event["call_id"],
                                          "output": {"noted": True}}))
            except ConnectionClosed:
                self._answered.discard(key)  # asked again after the resume

    async def talk(self, stop_at: float) -> None:
        next_at = self.t0 + self.offset_s
        while not self.fatal:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if time.monotonic() >= stop_at:
                return
            try:
                await asyncio.wait_for(self.up.wait(), max(0.1, stop_at - time.monotonic()))
                if self.mode == "assistant":
                    await self._reply_finished(stop_at)
            except (TimeoutError, asyncio.TimeoutError):
                return
            self.spoken += 1
            self.cut += not await self._speak()
            next_at = max(next_at + self.period_s, time.monotonic())

    async def _reply_finished(self, stop_at: float) -> None:
        """Until every turn spoken so far has its response.done (20 s at most), then the
        reply's audio time: speaking over a reply would cancel it (barge-in)."""
        deadline = min(stop_at, time.monotonic() + 20)
        while time.monotonic() < deadline:
            turns = account(self.mode, self.events)
            if not turns["incomplete_ids"]:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        await asyncio.wait_for(self.up.wait(), max(0.1, stop_at - time.monotonic()))

    async def _speak(self) -> bool:
        """One utterance in real time; False when the connection went away meanwhile."""
        ws, began = self.ws, time.monotonic()
        for k, frame in enumerate(FRAMES):
            await asyncio.sleep(max(0.0, began + k * 0.02 - time.monotonic()))
            if self.ws is not ws or ws is None:
                return False
            try:
                await ws.send(frame)
            except ConnectionClosed:
                return False
        return True

    async def end(self) -> None:
        self.ending = True
        ws = self.ws
        if ws is not None:
            try:
                await ws.send(json.dumps({"type": "session.end"}))
                await asyncio.wait_for(ws.wait_closed(), 5)
            except (ConnectionClosed, TimeoutError, asyncio.TimeoutError):
                pass
            await ws.close()


# -- the run ---------------------------------------------------------------------------------
async def drained(bus: Bus, sessions: list[Soaker]) -> bool:
    """Every session connected, complete, holding its out-stream's last seq; no work left."""
    live = [s for s in sessions if not s.fatal]
    if not all(s.up.is_set() for s in live) or any(account(s.mode, s.events)["missing"] for s in live):
        return False
    try:
        if not await bus.idle():
            return False
        return all([s.max_seq >= await bus.last_seq(s.sid) for s in live])
    except Exception:  # NATS still coming back
        return False


async def drain(rig: Rig, sessions: list[Soaker], timeout_s: float) -> dict:
    began = time.monotonic()
    bus = await Bus.connect(rig.system.nats_url, rig.system.env["PARLEY_PREFIX"])
    try:
        while time.monotonic() - began < timeout_s:
            if await drained(bus, sessions):
                return {"drained": True, "drain_s": round(time.monotonic() - began, 1)}
            await asyncio.sleep(0.5)
        return {"drained": False, "drain_s": round(time.monotonic() - began, 1)}
    finally:
        await bus.close()


async def progress(rig: Rig, sessions: list[Soaker], every_s: float = 30.0) -> None:
    while True:
        await asyncio.sleep(every_s)
        spoken = sum(s.spoken for s in sessions)
        incomplete = sum(len(account(s.mode, s.events)["missing"]) for s in sessions)
        print(f"  {time.monotonic() - rig.t0:7.1f} s  connected {sum(s.up.is_set() for s in sessions)}"
              f"/{len(sessions)}, utterances spoken {spoken}, awaiting results {incomplete}", flush=True)


async def soak(rig: Rig, args: argparse.Namespace) -> dict:
    quiet = await wait_for_quiet({**rig.pids(), LOADGEN: os.getpid()}, args.quiet_pct, args.quiet_wait_s)
    rig.t0 = t0 = time.monotonic()
    busy0, stop_at = procstat.busy_cpu_seconds(), t0 + 60 * args.minutes
    modes = ("translate", "assistant")
    sessions = [Soaker(i, modes[(i // 2) % 2], rig.system, t0, 1 + i * args.period_s / args.sessions,
                       args.period_s) for i in range(args.sessions)]
    memory, stop_sampling = Memory(), asyncio.Event()
    sampler = asyncio.create_task(memory.run(rig, args.sample_s, stop_sampling))
    links = [asyncio.create_task(s.keep_connected()) for s in sessions]
    ticker = asyncio.create_task(progress(rig, sessions))
    await asyncio.gather(*(s.talk(stop_at) for s in sessions), fault_schedule(rig, args, stop_at))
    talked_s = time.monotonic() - t0
    print(f"  {talked_s:7.1f} s  speaking stopped; draining (at most {args.drain_s:.0f} s)", flush=True)
    drain_result = await drain(rig, sessions, args.drain_s)
    await asyncio.sleep(args.settle_s)  # anything delivered twice late shows up meanwhile
    wall_s, busy_s = time.monotonic() - t0, procstat.busy_cpu_seconds() - busy0
    ticker.cancel()
    stop_sampling.set()
    await sampler
    await asyncio.gather(*(s.end() for s in sessions))
    for task in links:
        task.cancel()
    return {"before_start": quiet, "talked_s": round(talked_s, 1), **drain_result,
            "sessions": sessions, "memory": memory.report(args.warmup_s), "faults": rig.faults,
            "machine_busy_pct_of_core": round(100 * busy_s / wall_s, 1)}


def main(args: argparse.Namespace) -> int:
    log_dir = Path(tempfile.mkdtemp(prefix="parley-bench-soak-"))
    started = time.time()
    print(f"bench soak: {args.sessions} sessions, {args.minutes} min, a fault every {args.fault_every_s} s "
          f"({args.faults}); logs in {log_dir}", flush=True)
    rig = start_rig(log_dir, args.engine_delay_ms)
    try:
        result = asyncio.run(soak(rig, args))
    finally:
        codes = stop_rig(rig)
    sessions = result.pop("sessions")
    rec = recoveries(sessions, result["faults"])
    summaries = [session_summary(s, result["faults"]) for s in sessions]
    totals = totals_of(summaries)
    print_report(summaries, rec, result["memory"], totals)
    print(f"\nlost {totals['lost']}, duplicated {totals['duplicated']} of {totals['expected']} expected utterances "
          f"({totals['durable_events']} durable events); drained: {result['drained']}; "
          f"machine busy {result['machine_busy_pct_of_core']} % of a core")
    payload = {"scenario": "soak", "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
               "duration_s": round(time.time() - started, 1), "argv": sys.argv[1:], "machine": machine(),
               "engines": "bench", "config": {k: v for k, v in vars(args).items() if k != "out"} | {"out": str(args.out)},
               "totals": totals, "recovery": rec, **result, "sessions": summaries, "exit_codes": codes,
               "log_dir": str(log_dir)}
    killed = {f["target"] for f in result["faults"]}
    unclean = {name: code for name, code in codes.items() if code != 0 and name not in killed}
    if unclean:
        print(f"WARNING: processes did not exit cleanly: {unclean} (logs in {log_dir})")
    print(f"results: {write_json('soak', payload, args.out)}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", type=int, default=20, help="concurrent sessions, half translate, "
                        "half assistant (default 20)")
    parser.add_argument("--minutes", type=float, default=5.0, help="how long the sessions talk (default 5)")
    parser.add_argument("--period-s", type=float, default=5.0, help="a session speaks every this many s (default 5)")
    parser.add_argument("--fault-every-s", type=float, default=30.0, help="a fault every this many s (default 30)")
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help=f"the cycle of faults, comma-separated (default {','.join(FAULTS)})")
    parser.add_argument("--engine-delay-ms", type=int, default=0,
                        help="the benchmark STT, translate and TTS engines take this long per item, as a "
                             "vendor would, so faults find more work in flight (default 0)")
    parser.add_argument("--restart-after-s", type=float, default=5.0,
                        help="a killed worker or edge is started again after this many s (default 5)")
    parser.add_argument("--nats-down-s", type=float, default=3.0, help="NATS is down this long (default 3)")
    parser.add_argument("--redis-down-s", type=float, default=10.0, help="Redis is down this long (default 10)")
    parser.add_argument("--drain-s", type=float, default=60.0, help="after the talking, wait this long at most "
                        "for every result (default 60)")
    parser.add_argument("--settle-s", type=float, default=3.0, help="then this long for late duplicates (default 3)")
    parser.add_argument("--sample-s", type=float, default=3.0, help="memory sampled every this many s (default 3)")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="memory slope from this far into each "
                        "process's life (default 60)")
    parser.add_argument("--quiet-pct", type=float, default=10.0, help="before starting, wait until processes "
                        "outside the benchmark use at most this %% of a core (default 10)")
    parser.add_argument("--quiet-wait-s", type=float, default=180.0, help="…but no longer than this (default 180)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the JSON result")

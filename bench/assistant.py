"""Assistant mode with the benchmark engines and a fake model (tests/fakes/openai_server.py).

Two measurements, each over many turns; a turn is one short tone utterance streamed at
real-time pace, then waiting for its `response.done` (so a session never talks over its
own reply, which would be a barge-in):

- **tool round trip** (DESIGN.md: ≤ 20 ms p99): the model calls one client tool, the
  client answers at once, the model answers with one sentence. Per turn: the arrival of
  the model request that carries the tool result − the end of the model's tool-call
  response (both stamped by the fake, in this process) − the client's own time between
  receiving `tool.call` and sending `tool.result`. What is left is the tools worker, the
  bus, the edge, both WebSocket directions and the HTTP hop back to the model.
- **end of speech → first reply audio** on the plain path (a reply without a tool call):
  first `audio.delta` − last tone frame sent − 300 ms (the VAD hangover, as in echo.py),
  with every delay 0, then with STT 100 ms, model 200 ms before its first token, TTS 100 ms.

Every session has its own `instructions`, so the fake's request log says whose turn a
model request belongs to.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nats
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench import procstat
from bench.level import LOADGEN, wait_for_quiet
from bench.load import stream
from bench.report import cpu_cells, cpu_headers, ms, progress_line, spread, table
from bench.scripts import Script, echo_script
from bench.system import Running, running, stage_means_ms
from shared.messages import ClientEvent, ToolAnswer, decode
from shared.subjects import Subjects
from tests.fakes.openai_server import FakeOpenAI

HANGOVER_MS = 300.0  # the edge's VAD hangover, as echo.py allows for it
API_KEY = "sk-parley-bench"
COLOR_TOOL = {
    "name": "set_color", "description": "Change the page colour",
    "parameters": {"type": "object", "properties": {"color": {"type": "string", "enum": ["red", "blue"]}},
                   "required": ["color"]},
}
TOOL_TURN = dict(tool_calls=({"name": "set_color", "arguments": {"color": "blue"}},),
                 after_tool_text="Done, the page is blue.", reply_text=None)
PLAIN_TURN = dict(tool_calls=(), after_tool_text=None, reply_text="Sure, here you are.")
PROCESSES = ["edge", "stt", "tools", "tts", "nats-server", "loadgen", "other"]


class _NoDelayHandler(FakeOpenAI.handler):
    disable_nagle_algorithm = True


class Model(FakeOpenAI):
    """The fake with TCP_NODELAY, as API front ends set it: without it, Nagle holds the
    small SSE writes of a streamed answer until the worker's delayed ACK, ~40 ms."""

    handler = _NoDelayHandler


def utterance() -> Script:
    """A short turn: 0.5 s of 220 Hz tone, then silence just past the VAD's close."""
    return echo_script(1, tone_s=0.5, silence_s=0.4)


def system_env(fake: FakeOpenAI, stt_ms: int = 0, tts_ms: int = 0) -> dict[str, str]:
    return {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": fake.url, "PARLEY_LLM_CHAIN": "openai:gpt-4.1-nano",
            "PARLEY_BENCH_STT_DELAY_MS": str(stt_ms), "PARLEY_BENCH_TTS_DELAY_MS": str(tts_ms)}


@dataclass
class Turn:
    """One turn's moments as the client saw them (time.monotonic(); None: never came)."""

    eos_at: float | None = None  # the last tone frame sent
    call_at: float | None = None  # tool.call received
    result_sent_at: float | None = None  # tool.result sent (ws.send returned)
    first_audio_at: float | None = None
    done_at: float | None = None
    status: str | None = None
    call_id: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Talker:
    """One assistant session: speaks a turn, answers tool calls at once, waits for the reply.

    Has what bench.load.stream needs of a client (`script`, `ws`, `broken`, `send_frame`).
    """

    def __init__(self, ws: ClientConnection, script: Script, name: str, sid: str) -> None:
        self.ws, self.script, self.name, self.sid = ws, script, name, sid
        self.broken: str | None = None
        self.turns: list[Turn] = []
        self.problems: list[dict] = []
        self.lags: list[float] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                arrived = time.monotonic()
                event = json.loads(message)
                await self._on(event, arrived)
        except ConnectionClosed as exc:
            self.broken = self.broken or f"closed: {exc}"

    async def _on(self, event: dict, arrived: float) -> None:
        kind, turn = event.get("type"), self.turns[-1] if self.turns else None
        if kind in ("error", "warning"):
            self.problems.append({k: event.get(k) for k in ("type", "code", "message")})
        if turn is None:
            return
        if kind == "tool.call" and turn.call_at is None:
            turn.call_at, turn.call_id = arrived, event["call_id"]
            await self.ws.send(json.dumps({"type": "tool.result", "call_id": event["call_id"],
                                           "output": {"ok": True, "color": "blue"}}))
            turn.result_sent_at = time.monotonic()
        elif kind == "audio.delta" and turn.first_audio_at is None:
            turn.first_audio_at = arrived
        elif kind == "response.done":
            turn.done_at, turn.status = arrived, event.get("status")
            turn.done.set()

    async def send_frame(self, k: int) -> None:
        await self.ws.send(self.script.frames[k])
        if k == self.script.eos[0]:
            self.turns[-1].eos_at = time.monotonic()

    async def talk(self, turns: int, start_at: float, timeout_s: float) -> None:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        for _ in range(turns):
            if self.broken:
                return
            self.turns.append(turn := Turn())
            lags, _ = await stream([self], [time.monotonic()])
            self.lags += lags
            try:
                await asyncio.wait_for(turn.done.wait(), timeout_s)
            except (TimeoutError, asyncio.TimeoutError):
                self.problems.append({"type": "bench", "code": "no_response_done", "message": self.name})

    async def end(self) -> None:
        try:
            await self.ws.send(json.dumps({"type": "session.end"}))
            await asyncio.wait_for(self.ws.wait_closed(), 10)
        except (ConnectionClosed, TimeoutError, asyncio.TimeoutError):
            pass
        await self.ws.close()
        self._reader.cancel()


async def open_talker(url: str, name: str, compression: str | None) -> Talker:
    ws = await connect(url, max_size=None, compression=compression, ping_interval=None, open_timeout=60)
    await ws.send(json.dumps({"type": "session.start", "mode": "assistant", "language": "en",
                              "instructions": name, "tools": [COLOR_TOOL]}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 60))
    if reply.get("type") != "session.started":
        await ws.close()
        raise RuntimeError(f"session.start refused: {reply}")
    return Talker(ws, utterance(), name, reply["session_id"])


class BusWatch:
    """A plain NATS subscriber on the out and tool-answer subjects: when each tool.call was
    published by the tools worker, and each tool answer by the edge. It splits a round trip
    into the worker's part and the edge's part, each with one bus delivery in it."""

    def __init__(self, subjects: Subjects) -> None:
        self.subjects = subjects
        self.calls: dict[str, list[float]] = {}  # out subject → tool.call seen, in order
        self.answers: dict[str, list[float]] = {}  # answer subject → ToolAnswer seen

    async def start(self, url: str) -> None:
        self.nc = await nats.connect(url)
        await self.nc.subscribe(self.subjects.out_wildcard, cb=self._out)
        await self.nc.subscribe(self.subjects.tool_answers("x").removesuffix("x") + "*", cb=self._answer)

    async def _out(self, msg) -> None:
        seen = time.monotonic()
        if b"tool.call" in msg.data:  # most of this traffic is audio: skip it undecoded
            message = decode(msg.data)
            if isinstance(message, ClientEvent) and message.event.get("type") == "tool.call":
                self.calls.setdefault(msg.subject, []).append(seen)

    async def _answer(self, msg) -> None:
        seen = time.monotonic()
        if isinstance(decode(msg.data), ToolAnswer):
            self.answers.setdefault(msg.subject, []).append(seen)

    def hops(self, talker: Talker, n: int) -> tuple[float, float] | None:
        calls = self.calls.get(self.subjects.out(talker.sid), [])
        answers = self.answers.get(self.subjects.tool_answers(talker.sid), [])
        return (calls[n], answers[n]) if n < len(calls) and n < len(answers) else None


# ---- one level: N sessions × T turns ----------------------------------------------------


@dataclass
class Level:
    sessions: int
    talkers: list[Talker]
    window_s: float
    usage: dict
    stages: dict
    quiet: dict
    watch: BusWatch | None = None


async def run_level(running: Running, fake: FakeOpenAI, sessions: int, turns: int, args,
                    tag: str, watch: BusWatch | None = None) -> Level:
    pids = {**running.pids(), LOADGEN: os.getpid()}
    quiet = await wait_for_quiet(pids, args.quiet_pct, args.quiet_wait_s)
    fake.clear_log()
    if watch:
        watch.calls, watch.answers = {}, {}
    gate = asyncio.Semaphore(16)

    async def one(i: int) -> Talker:
        async with gate:
            return await open_talker(running.system.ws_url(), f"bench {tag} session {i}", args.compression)

    talkers = await asyncio.gather(*(one(i) for i in range(sessions)))
    stages_before = running.system.stage_totals()
    before, busy = procstat.sample_all(pids, own_only=(LOADGEN,)), procstat.busy_cpu_seconds()
    t0 = time.monotonic()
    await asyncio.gather(*(t.talk(turns, t0 + 0.1 + i * args.stagger_s / sessions, args.drain_s)
                           for i, t in enumerate(talkers)))
    window_s = time.monotonic() - t0
    usage = procstat.usage(before, procstat.sample_all(pids, own_only=(LOADGEN,)), window_s,
                           procstat.busy_cpu_seconds() - busy)
    stages = stage_means_ms(stages_before, running.system.stage_totals())
    await asyncio.gather(*(t.end() for t in talkers))
    running.system.check_alive()
    return Level(sessions, list(talkers), window_s, usage, stages, quiet, watch)


async def clean_level(running: Running, fake: FakeOpenAI, sessions: int, turns: int, args, tag: str,
                      watch: BusWatch | None = None) -> Level:
    """run_level again (at most --retries times) when other processes took > 2 × --quiet-pct."""
    for attempt in range(1, args.retries + 2):
        level = await run_level(running, fake, sessions, turns, args, tag, watch)
        other = level.usage["other"]["cpu_pct_of_core"]
        if other <= 2 * args.quiet_pct or attempt > args.retries:
            level.quiet["attempts"] = attempt
            return level
        print(f"  ({sessions} sessions: other processes took {other:.0f} % of a core; again)", flush=True)
    raise AssertionError("unreachable")


# ---- from raw times to numbers ----------------------------------------------------------


def _chat_by_session(fake: FakeOpenAI) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in fake.requests:
        if r.path.endswith("/chat/completions") and isinstance(r.json, dict):
            system = r.json["messages"][0]
            out.setdefault(system.get("content") if system.get("role") == "system" else "", []).append(r)
    return out


HOPS = ("worker_out_ms", "edge_out_ms", "edge_in_ms", "worker_in_ms")


def round_trips(level: Level, fake: FakeOpenAI) -> tuple[list[float | None], list[dict]]:
    """Per turn, in ms: tool-result request arrival − tool-call response end − client time;
    and its hops: model end → tool.call on the bus (worker_out) → at the client (edge_out);
    tool.result sent → answer on the bus (edge_in) → model request arrives (worker_in)."""
    requests = _chat_by_session(fake)
    values, parts = [], []
    for talker in level.talkers:
        log = requests.get(talker.name, [])
        answers = [k for k, r in enumerate(log) if k and r.json["messages"][-1].get("role") == "tool"]
        for n, turn in enumerate(talker.turns):
            if n >= len(answers) or turn.call_at is None or turn.result_sent_at is None:
                values.append(None)
                continue
            call, answer = log[answers[n] - 1], log[answers[n]]
            client = turn.result_sent_at - turn.call_at
            values.append(1000 * (answer.arrived_at - call.finished_at - client))
            on_bus = level.watch.hops(talker, n) if level.watch else None
            if on_bus:
                moments = (call.finished_at, on_bus[0], turn.call_at, turn.result_sent_at, on_bus[1],
                           answer.arrived_at)
                gaps = [1000 * (b - a) for a, b in zip(moments, moments[1:])]
                parts.append({"round_trip_ms": values[-1], "client_ms": gaps[2],
                              **dict(zip(HOPS, gaps[:2] + gaps[3:]))})
    return values, parts


def first_audio(level: Level) -> list[float | None]:
    return [None if t.first_audio_at is None or t.eos_at is None
            else 1000 * (t.first_audio_at - t.eos_at) - HANGOVER_MS
            for talker in level.talkers for t in talker.turns]


def common(level: Level) -> dict:
    turns = [t for talker in level.talkers for t in talker.turns]
    lags = [1000 * x for talker in level.talkers for x in talker.lags]
    return {
        "sessions": level.sessions, "turns": len(turns), "window_s": round(level.window_s, 2),
        "not_completed": sum(1 for t in turns if t.status != "completed"),
        "broken_sessions": sum(1 for t in level.talkers if t.broken),
        "loadgen_send_lag_ms": spread(lags, (50, 99)), "process_usage": level.usage,
        "worker_stage_means": level.stages, "before_start": level.quiet,
        "problems": [p for t in level.talkers for p in t.problems][:20],
    }


def _mean(parts: list[dict], key: str) -> float | None:
    return round(sum(p[key] for p in parts) / len(parts), 3) if parts else None


def summarise_round_trip(level: Level, fake: FakeOpenAI) -> dict:
    values, parts = round_trips(level, fake)
    slowest = sorted(parts, key=lambda p: p["round_trip_ms"])[-max(1, len(parts) // 20):]
    return {**common(level), "round_trip_ms": spread(values),
            "hops_ms": {k: spread([p[k] for p in parts]) for k in (*HOPS, "client_ms")},
            "slowest_5pct_hops_mean_ms": {k: _mean(slowest, k) for k in ("round_trip_ms", *HOPS)},
            "first_audio_after_hangover_ms": spread(first_audio(level))}


def summarise_first_audio(level: Level) -> dict:
    return {**common(level), "first_audio_after_hangover_ms": spread(first_audio(level))}


# ---- the run: two systems (delays 0, then delayed), one fake model ----------------------

RT_HEADERS = ["sessions", "turns", "missing", "p50", "p95", "p99", "max", "w-out", "e-out", "e-in", "w-in",
              *cpu_headers(PROCESSES), "lag p99"]
FA_HEADERS = ["stt/llm/tts ms", "sessions", "turns", "missing", "p50", "p95", "p99", "max",
              *cpu_headers(PROCESSES), "lag p99"]


def rt_row(s: dict) -> list:
    r = s["round_trip_ms"]
    return [s["sessions"], s["turns"], r["missing"], *(ms(r[k]) for k in ("p50", "p95", "p99", "max")),
            *(ms(s["hops_ms"][k]["p50"]) for k in HOPS),
            *cpu_cells(s["process_usage"], PROCESSES), ms(s["loadgen_send_lag_ms"]["p99"])]


def fa_row(s: dict) -> list:
    f = s["first_audio_after_hangover_ms"]
    return [s["delays"], s["sessions"], s["turns"], f["missing"], *(ms(f[k]) for k in ("p50", "p95", "p99", "max")),
            *cpu_cells(s["process_usage"], PROCESSES), ms(s["loadgen_send_lag_ms"]["p99"])]


def _per_session(total: int, sessions: int) -> int:
    return max(1, math.ceil(total / sessions))


async def _tool_levels(running: Running, fake: FakeOpenAI, args) -> list[dict]:
    fake.knobs.set(latency_s=0.0, **TOOL_TURN)
    watch = BusWatch(Subjects(running.system.env.get("PARLEY_PREFIX", "parley")))
    await watch.start(running.bus.url)
    await run_level(running, fake, 1, 2, args, "warm-up")  # consumers, connections: not reported
    print("tool round trip in ms (model's tool-call response end → model request with the result,\n"
          "minus the client's own time); hop p50s: w-out model end → tool.call on the bus, e-out → at\n"
          "the client, e-in tool.result sent → answer on the bus, w-in → model request arrives")
    print(progress_line(RT_HEADERS, RT_HEADERS))
    results = []
    for n in args.sessions:
        level = await clean_level(running, fake, n, _per_session(args.turns, n), args, f"tool{n}", watch)
        results.append(summarise_round_trip(level, fake))
        print(progress_line(RT_HEADERS, rt_row(results[-1])), flush=True)
    await watch.nc.close()
    return results


async def _plain_levels(running: Running, fake: FakeOpenAI, args, delays: str, latency_s: float) -> list[dict]:
    fake.knobs.set(latency_s=latency_s, **PLAIN_TURN)
    await run_level(running, fake, 1, 2, args, f"warm-up-{delays}")
    results = []
    for n in args.reply_sessions:
        level = await clean_level(running, fake, n, _per_session(args.reply_turns, n), args, f"plain{n}")
        results.append({"delays": delays, **summarise_first_audio(level)})
        print(progress_line(FA_HEADERS, fa_row(results[-1])), flush=True)
    return results


async def _zero(running: Running, fake: FakeOpenAI, args) -> tuple[list[dict], list[dict]]:
    tool = await _tool_levels(running, fake, args)
    print("\nend of speech → first reply audio, no tool call, in ms (first audio.delta − last tone\n"
          "frame − 300 ms hangover)")
    print(progress_line(FA_HEADERS, FA_HEADERS))
    return tool, await _plain_levels(running, fake, args, "0/0/0", 0.0)


def run(args: argparse.Namespace, cpus: str | None, log_dir: Path) -> dict:
    """Everything; returns the JSON payload's scenario part."""
    # The fake model's handler threads stamp times in this process: a short GIL switch
    # interval keeps the load generator's loop from holding them up by up to 5 ms.
    sys.setswitchinterval(args.switch_interval_ms / 1000)
    delayed = f"{args.stt_delay_ms}/{args.model_latency_ms}/{args.tts_delay_ms}"
    exit_codes = {}
    with Model(api_key=API_KEY) as fake:
        with running("bench", cpus, log_dir / "zero", system_env(fake)) as system:
            tool, plain = asyncio.run(_zero(system, fake, args))
        exit_codes["zero"] = system.exit_codes
        env = system_env(fake, args.stt_delay_ms, args.tts_delay_ms)
        with running("bench", cpus, log_dir / "delayed", env) as system:
            plain += asyncio.run(_plain_levels(system, fake, args, delayed, args.model_latency_ms / 1000))
        exit_codes["delayed"] = system.exit_codes
    print()
    print(table(RT_HEADERS, [rt_row(s) for s in tool]))
    print()
    print(table(FA_HEADERS, [fa_row(s) for s in plain]))
    return {"exit_codes": exit_codes, "switch_interval_ms": args.switch_interval_ms,
            "round_trip_levels": tool, "first_audio_levels": plain,
            "delays": {"stt_ms": args.stt_delay_ms, "model_first_token_ms": args.model_latency_ms,
                       "tts_ms": args.tts_delay_ms}}


def add_arguments(parser: argparse.ArgumentParser, sizes) -> None:
    parser.add_argument("--sessions", type=sizes, default=[1, 10, 50],
                        help="tool round trip: comma-separated session counts (default 1,10,50)")
    parser.add_argument("--turns", type=int, default=200, help="tool turns per level, spread over its sessions "
                        "(default 200)")
    parser.add_argument("--reply-sessions", type=sizes, default=[1, 10],
                        help="first reply audio: comma-separated session counts (default 1,10)")
    parser.add_argument("--reply-turns", type=int, default=100, help="plain turns per level (default 100)")
    parser.add_argument("--stt-delay-ms", type=int, default=100, help="delayed run: STT (default 100)")
    parser.add_argument("--model-latency-ms", type=int, default=200,
                        help="delayed run: the model's time to its first token (default 200)")
    parser.add_argument("--tts-delay-ms", type=int, default=100, help="delayed run: TTS (default 100)")
    parser.add_argument("--switch-interval-ms", type=float, default=0.5,
                        help="this process's GIL switch interval (default 0.5; Python's is 5)")

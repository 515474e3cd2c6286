"""One load level: N sessions connect, stream their scripts, wait for results, end.

CPU and the workers' stage timings are read just before the first frame and just after
the last result, so connection set-up and teardown are not in them.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

from bench import procstat
from bench.load import Client, open_clients, stream, utterance_times, wait_complete
from bench.report import spread
from bench.scripts import Script
from bench.system import Running, stage_means_ms

LOADGEN = "loadgen"


@dataclass
class Level:
    sessions: int
    clients: list[Client]
    connect_s: float
    window_s: float  # first frame → last result (or timeout): the CPU window
    send_lag_ms: dict
    usage: dict
    stages: dict
    broken: int
    quiet: dict
    attempts: int = 1

    def times(self):
        return [t for i, c in enumerate(self.clients) for t in utterance_times(i, c)]

    def problems(self) -> list[dict]:
        return [p for c in self.clients for p in c.problems]

    def common(self) -> dict:
        """The part of a level's JSON both scenarios share."""
        return {
            "sessions": self.sessions, "connect_s": round(self.connect_s, 2),
            "window_s": round(self.window_s, 2), "broken_sessions": self.broken,
            "loadgen_send_lag_ms": self.send_lag_ms, "process_usage": self.usage,
            "worker_stage_means": self.stages, "problems": self.problems()[:20],
            "before_start": self.quiet, "attempts": self.attempts,
        }


async def wait_for_quiet(pids: dict[str, int], limit_pct: float, timeout_s: float) -> dict:
    """Until processes outside the benchmark use at most `limit_pct` of a core (measured
    over 2 s), or `timeout_s` passed: these machines are shared, and a test suite running
    next to the benchmark changes its numbers. Each level's `other` CPU is reported too."""
    began = time.monotonic()
    while True:
        before, busy = procstat.sample_all(pids, own_only=(LOADGEN,)), procstat.busy_cpu_seconds()
        await asyncio.sleep(2.0)
        after = procstat.sample_all(pids, own_only=(LOADGEN,))
        usage = procstat.usage(before, after, 2.0, procstat.busy_cpu_seconds() - busy)
        other = usage["other"]["cpu_pct_of_core"]
        waited = time.monotonic() - began
        if other <= limit_pct or waited >= timeout_s:
            if waited > 2.5:
                print(f"  (waited {waited:.0f} s for other processes to calm down: {other:.0f} % of a core)",
                      flush=True)
            return {"other_cpu_pct": other, "waited_s": round(waited, 1)}


async def run_level(running: Running, scripts: list[Script], start: dict, *, stagger_s: float,
                    compression: str | None, drain_timeout_s: float, quiet_pct: float = 100.0,
                    quiet_wait_s: float = 0.0) -> Level:
    pids = {**running.pids(), LOADGEN: os.getpid()}
    quiet = await wait_for_quiet(pids, quiet_pct, quiet_wait_s)
    began = time.monotonic()
    clients = await open_clients(running.system.ws_url(), scripts, start, compression)
    connect_s = time.monotonic() - began
    stages_before = running.system.stage_totals()
    before = procstat.sample_all(pids, own_only=(LOADGEN,))
    busy_before = procstat.busy_cpu_seconds()
    t0 = time.monotonic()
    # Sessions start evenly spread over `stagger_s`: a steady load, not one synchronised burst.
    first = t0 + 0.1
    starts = [first + i * stagger_s / len(clients) for i in range(len(clients))]
    lags, paused = await stream(clients, starts)
    await wait_complete(clients, drain_timeout_s)
    window_s = time.monotonic() - t0
    after = procstat.sample_all(pids, own_only=(LOADGEN,))
    busy = procstat.busy_cpu_seconds() - busy_before
    stages = stage_means_ms(stages_before, running.system.stage_totals())
    await asyncio.gather(*(c.end() for c in clients))
    running.system.check_alive()  # a crashed process makes the numbers meaningless: say so loudly
    lag_ms = {**spread([1000 * x for x in lags], (50, 99)), "write_paused_sends": paused}
    return Level(len(clients), clients, connect_s, window_s, {k: _round(v) for k, v in lag_ms.items()},
                 procstat.usage(before, after, window_s, busy), stages, sum(1 for c in clients if c.broken),
                 quiet)


def _round(value):
    return round(value, 2) if isinstance(value, float) else value


async def run_clean_level(running: Running, scripts: list[Script], start: dict, *, retries: int = 2,
                          **options) -> Level:
    """run_level, run again (at most `retries` times) when processes outside the benchmark
    took more than twice `quiet_pct` of a core while it ran; the last attempt stands."""
    for attempt in range(1, retries + 2):
        level = await run_level(running, scripts, start, **options)
        level.attempts = attempt
        other = level.usage["other"]["cpu_pct_of_core"]
        if other <= 2 * options.get("quiet_pct", 100.0) or attempt > retries:
            return level
        print(f"  ({level.sessions} sessions: other processes took {other:.0f} % of a core meanwhile; "
              "running the level again)", flush=True)
    raise AssertionError("unreachable")

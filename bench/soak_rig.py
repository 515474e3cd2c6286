"""The soak benchmark's system and what is done to it: nats-server, redis-server, two edges
and two instances of each worker kind, faults injected on a schedule, and the memory of
every process sampled over the run."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench import procstat
from bench.level import LOADGEN
from bench.soak_report import slope_mib_per_min
from bench.system import start_bus
from shared.subjects import WORKER_KINDS
from tests.chaos.support import chaos_system
from tests.support.servers import start_redis

EDGES = ("edge-a", "edge-b")


@dataclass
class Rig:
    """nats-server, redis-server and the Parley processes, with what was done to them."""

    system: object
    bus: object
    redis: object
    t0: float = 0.0
    faults: list[dict] = field(default_factory=list)

    def pids(self) -> dict[str, int]:
        pids = {name: p.pid for name, p in dict(self.system.processes).items()}
        pids["nats-server"], pids["redis-server"] = self.bus.process.pid, self.redis.process.pid
        return pids

    def _record(self, kind: str, target: str, **extra) -> dict:
        fault = {"kind": kind, "target": target, "at_s": round(time.monotonic() - self.t0, 3), **extra}
        self.faults.append(fault)
        print(f"  {fault['at_s']:7.1f} s  fault: {kind} ({target})", flush=True)
        return fault

    async def inject(self, kind: str, args: argparse.Namespace) -> None:
        if kind in WORKER_KINDS or kind == "edge":
            await self._kill_and_restart(kind, args.restart_after_s)
        elif kind == "nats":
            self._record("nats", "nats-server", down_s=args.nats_down_s)
            await asyncio.to_thread(self.bus.stop)
            await asyncio.sleep(args.nats_down_s)
            # Started from this (the main) thread: die_with_parent's signal is sent when the
            # *thread* that started a child ends, and asyncio.to_thread's threads end.
            self.bus.restart()
        elif kind == "redis":
            self._record("redis", "redis-server", down_s=args.redis_down_s)
            port = self.redis.port
            await asyncio.to_thread(self.redis.stop)
            await asyncio.sleep(args.redis_down_s)
            self.redis = start_redis(port)  # from the main thread, as above

    async def _kill_and_restart(self, kind: str, after_s: float) -> None:
        name = "edge-a" if kind == "edge" else f"{kind}-a"
        victim = self.system.processes.pop(name)
        victim.kill()
        await asyncio.to_thread(victim.wait)
        self._record(kind, name, restart_after_s=after_s)
        await asyncio.sleep(after_s)
        if kind == "edge":
            self.system.start_edge(name)
            await asyncio.to_thread(self.system.wait_ready, name)
        else:
            self.system.start_worker(kind, name)


async def fault_schedule(rig: Rig, args: argparse.Namespace, stop_at: float) -> None:
    cycle = [f for f in args.faults.split(",") if f]
    for k in range(10_000):
        at = rig.t0 + (k + 1) * args.fault_every_s
        if at >= stop_at:
            return
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        await rig.inject(cycle[k % len(cycle)], args)


@dataclass
class Memory:
    """VmRSS (MiB) and CPU of every process every few seconds, per incarnation (pid)."""

    series: dict[tuple[str, int], list[tuple[float, float, float]]] = field(default_factory=dict)

    def sample(self, pids: dict[str, int], t_s: float) -> None:
        for name, pid in pids.items():
            try:
                point = (round(t_s, 2), round(procstat.rss_mib(pid), 2), procstat.cpu_seconds(pid))
            except (OSError, ValueError, IndexError):
                continue  # gone between listing and reading
            self.series.setdefault((name, pid), []).append(point)

    async def run(self, rig: Rig, every_s: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample({**rig.pids(), LOADGEN: os.getpid()}, time.monotonic() - rig.t0)
            try:
                await asyncio.wait_for(stop.wait(), every_s)
            except (TimeoutError, asyncio.TimeoutError):
                pass

    def report(self, warmup_s: float) -> list[dict]:
        out, incarnation = [], Counter()
        for (name, pid), points in sorted(self.series.items(), key=lambda kv: (kv[0][0], kv[1][0][0])):
            incarnation[name] += 1
            rss = [r for _, r, _ in points]
            settled = [(t, r) for t, r, _ in points if t >= points[0][0] + warmup_s]
            out.append({"process": name, "incarnation": incarnation[name], "pid": pid,
                        "from_s": points[0][0], "to_s": points[-1][0], "samples": len(points),
                        "first_mib": rss[0], "last_mib": rss[-1], "max_mib": max(rss),
                        "after_warmup_first_mib": settled[0][1] if settled else None,
                        "slope_mib_per_min": slope_mib_per_min(settled),
                        "cpu_s": round(points[-1][2] - points[0][2], 2),
                        "rss_mib_series": [[t, r] for t, r, _ in points]})
        return out


def start_rig(log_dir: Path, delay_ms: int) -> Rig:
    bus = start_bus(None, log_dir)
    redis = start_redis()
    delay = str(delay_ms)
    system = chaos_system(bus.url, log_dir, f"soak{uuid.uuid4().hex[:8]}", redis.url, PARLEY_LLM_CHAIN="local",
                          PARLEY_BENCH_STT_DELAY_MS=delay, PARLEY_BENCH_TRANSLATE_DELAY_MS=delay,
                          PARLEY_BENCH_TTS_DELAY_MS=delay)
    rig = Rig(system, bus, redis)
    try:
        for kind in WORKER_KINDS:
            for name in (f"{kind}-a", f"{kind}-b"):
                system.start_worker(kind, name)
        for edge in EDGES:
            system.start_edge(edge)
        for edge in EDGES:
            system.wait_ready(edge)
    except BaseException:
        stop_rig(rig)
        raise
    return rig


def stop_rig(rig: Rig) -> dict[str, int]:
    codes = rig.system.stop_all()
    rig.redis.stop()
    rig.bus.stop()
    shutil.rmtree(rig.bus.store_dir, ignore_errors=True)
    return codes

"""A fresh nats-server and Parley system per benchmark run, optionally pinned to CPUs.

Reuses the test suite's `ParleySystem` (edge + one worker of each kind as OS processes);
adds `taskset` pinning and a known metrics port per worker, so the benchmark can read the
workers' own stage timings.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from shared.natsd import NatsServer, free_port, start_nats
from tests.support.system import ParleySystem


def taskset(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus else []


@dataclass
class BenchSystem(ParleySystem):
    metrics_ports: dict[str, int] = field(default_factory=dict)

    def start_worker(self, kind: str, name: str | None = None) -> subprocess.Popen:
        # A known metrics port per worker: the benchmark reads the workers' stage timings.
        self.metrics_ports[name or kind] = port = free_port()
        return self._spawn(name or kind, "worker", kind, env={"PARLEY_METRICS_PORT": str(port)})

    def stage_totals(self) -> dict[str, tuple[float, float]]:
        """parley_stage_seconds (sum, count) per stage, summed over every worker."""
        totals: dict[str, list[float]] = {}
        for port in self.metrics_ports.values():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                text = reply.read().decode()
            for family in text_string_to_metric_families(text):
                if family.name != "parley_stage_seconds":
                    continue
                for s in family.samples:
                    kind = {"parley_stage_seconds_sum": 0, "parley_stage_seconds_count": 1}.get(s.name)
                    if kind is not None:
                        totals.setdefault(s.labels["stage"], [0.0, 0.0])[kind] += s.value
        return {stage: (v[0], v[1]) for stage, v in totals.items()}


def stage_means_ms(before: dict, after: dict) -> dict[str, dict]:
    """Mean time per stage between two `stage_totals` readings, as the workers saw it."""
    out = {}
    for stage, (total, count) in after.items():
        total0, count0 = before.get(stage, (0.0, 0.0))
        if count > count0:
            mean_ms = 1000 * (total - total0) / (count - count0)
            out[stage] = {"count": int(count - count0), "mean_ms": round(mean_ms, 2)}
    return out


def start_bus(cpus: str | None, log_dir: Path) -> NatsServer:
    """With --pin-core the bus shares the core with every other Parley process."""
    return start_nats(log_file=open(log_dir / "nats-server.log", "ab"), wrapper=tuple(taskset(cpus)))


@dataclass
class Running:
    system: BenchSystem
    bus: NatsServer
    exit_codes: dict[str, int] = field(default_factory=dict)

    def pids(self) -> dict[str, int]:
        pids = {name: p.pid for name, p in self.system.processes.items()}
        pids["nats-server"] = self.bus.process.pid
        return pids


@contextmanager
def running(engines: str, cpus: str | None, log_dir: Path, env: dict[str, str]) -> Iterator[Running]:
    """nats-server + edge + stt/translate/tts/tools workers; all stopped on exit."""
    log_dir.mkdir(parents=True, exist_ok=True)
    bus = start_bus(cpus, log_dir)
    system = BenchSystem(bus.url, None, engines, log_dir, env=env, wrapper=taskset(cpus))
    handle = Running(system, bus)
    try:
        system.start_all()
        yield handle
    finally:
        handle.exit_codes = system.stop_all()
        bus.stop()
        shutil.rmtree(bus.store_dir, ignore_errors=True)

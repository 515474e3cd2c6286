"""A whole Parley system as real OS processes, for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from shared.natsd import free_port
from shared.process import die_with_parent
from shared.subjects import WORKER_KINDS

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ParleySystem:
    nats_url: str
    redis_url: str | None
    engines: str
    log_dir: Path
    env: dict = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    edge_ports: dict[str, int] = field(default_factory=dict)
    wrapper: list[str] = field(default_factory=list)  # e.g. taskset: it execs the command

    def _spawn(self, name: str, *args: str, env: dict | None = None) -> subprocess.Popen:
        command = [*self.wrapper, sys.executable, "-m", "services.cli", *args,
                   "--nats-url", self.nats_url, "--engines", self.engines]
        if self.redis_url:
            command += ["--redis-url", self.redis_url]
        log = open(self.log_dir / f"{name}.log", "ab")
        env = {**os.environ, **self.env, **(env or {}), "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=log, env=env,
                                   preexec_fn=die_with_parent)
        self.processes[name] = process
        return process

    def start_worker(self, kind: str, name: str | None = None, env: dict | None = None) -> subprocess.Popen:
        """`env` for this instance only (e.g. a slow one: PARLEY_BENCH_*_DELAY_MS)."""
        return self._spawn(name or kind, "worker", kind, env=env)

    def start_edge(self, name: str = "edge") -> int:
        port = free_port()
        self._spawn(name, "edge", "--port", str(port))
        self.edge_ports[name] = port
        return port

    def url(self, edge: str = "edge") -> str:
        return f"http://127.0.0.1:{self.edge_ports[edge]}"

    def ws_url(self, edge: str = "edge") -> str:
        return f"ws://127.0.0.1:{self.edge_ports[edge]}/v1/stream"

    def wait_ready(self, edge: str = "edge", timeout_s: float = 60.0, path: str = "/readyz") -> None:
        """Until the edge answers 200 on `path` (/readyz: every worker kind answers too)."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(self.url(edge) + path, timeout=2) as reply:
                    if reply.status == 200:
                        return
            except Exception as exc:
                last = str(exc)
            time.sleep(0.2)
        raise TimeoutError(f"edge {edge} not ready after {timeout_s} s ({last}); logs in {self.log_dir}")

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")

    def stop(self, name: str, sig: int = 15) -> int:
        process = self.processes.pop(name)
        process.send_signal(sig)
        return process.wait(20)

    def stop_all(self, timeout_s: float = 20.0) -> dict[str, int]:
        """SIGTERM everything at once; whatever has not exited in time is killed (-9)."""
        processes, self.processes = self.processes, {}
        for process in processes.values():
            process.terminate()
        deadline = time.monotonic() + timeout_s
        codes = {}
        for name, process in processes.items():
            try:
                codes[name] = process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
        return codes

    def start_all(self) -> None:
        try:
            for kind in WORKER_KINDS:
                self.start_worker(kind)
            self.start_edge()
            self.wait_ready()
        except BaseException:
            self.stop_all()  # a fixture that fails to start never reaches its teardown
            raise

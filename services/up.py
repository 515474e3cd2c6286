"""`parley up`: the whole system on one machine — embedded NATS, one edge, one of each worker.

Children are ordinary `parley edge` / `parley worker` processes; SIGINT/SIGTERM here is
passed on as SIGTERM to each, so every one drains, then the embedded NATS stops.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import subprocess
import sys
import time

from shared.config import Settings
from shared.natsd import NatsServer, start_nats
from shared.process import die_with_parent
from shared.subjects import WORKER_KINDS

log = logging.getLogger("parley.up")

STOP_GRACE_S = 15.0


def _child_command(settings: Settings, *args: str) -> list[str]:
    command = [sys.executable, "-m", "services.cli", *args, "--nats-url", settings.nats_url,
               "--engines", settings.engines, "--prefix", settings.prefix, "--log-level", settings.log_level]
    if settings.redis_url:
        command += ["--redis-url", settings.redis_url]
    return command


def _start_children(settings: Settings) -> list[subprocess.Popen]:
    commands = [_child_command(settings, "worker", kind) for kind in WORKER_KINDS]
    commands.append(_child_command(settings, "edge", "--host", settings.host, "--port", str(settings.port)))
    return [subprocess.Popen(command, preexec_fn=die_with_parent) for command in commands]


def _stop(children: list[subprocess.Popen]) -> int:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    status = 0
    for child in children:
        try:
            code = child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            code = child.wait()
        status = status or (code if code and code > 0 else 0)
    return status


def run(settings: Settings, nats_url_given: bool) -> int:
    nats: NatsServer | None = None
    if not nats_url_given:
        nats = start_nats()
        settings = dataclasses.replace(settings, nats_url=nats.url)
        log.info("embedded NATS at %s (monitoring %s)", nats.url, nats.monitor_url)
    print(f"Parley is starting: open http://{settings.host}:{settings.port}/  "
          f"(NATS {settings.nats_url}{', monitoring ' + nats.monitor_url if nats else ''})", flush=True)
    stopping = False

    def on_signal(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children = _start_children(settings)
    try:
        while not stopping:
            if any(child.poll() is not None for child in children):
                log.error("a child process exited; stopping the system")
                break
            time.sleep(0.2)
    finally:
        status = _stop(children)
        if nats:
            nats.stop()
    return status if stopping else 1

#!/usr/bin/env python3
"""Container health check for any Parley process (Docker HEALTHCHECK, Kubernetes exec probe).

Reads the command line of PID 1's child (or PID 1 itself) to learn which process runs here:
  parley edge …         -> GET http://127.0.0.1:<--port, default 8080>/healthz must answer 200
  parley worker <kind>  -> GET its metrics port (--metrics-port or PARLEY_METRICS_PORT) must
                           answer 200; with no fixed port, the worker process must be alive
Exit 0 healthy, 1 not. Standard library only.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path


def _cmdlines() -> list[list[str]]:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            lines.append([part.decode(errors="replace") for part in raw.split(b"\0") if part])
    return lines


def _parley_args(cmdline: list[str]) -> list[str] | None:
    """The arguments after `parley` (or `python -m services.cli`), if this is a Parley process."""
    for index, part in enumerate(cmdline):
        if part.endswith("/parley") or part == "parley" or part == "services.cli":
            rest = cmdline[index + 1:]
            if rest and rest[0] in ("edge", "worker", "up"):
                return rest
    return None


def _flag(args: list[str], name: str) -> str | None:
    for index, part in enumerate(args):
        if part == name and index + 1 < len(args):
            return args[index + 1]
        if part.startswith(name + "="):
            return part.split("=", 1)[1]
    return None


def _get_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def check(args: list[str]) -> bool:
    if args[0] in ("edge", "up"):
        port = _flag(args, "--port") or "8080"
        return _get_ok(f"http://127.0.0.1:{port}/healthz")
    port = _flag(args, "--metrics-port") or os.environ.get("PARLEY_METRICS_PORT", "0")
    if port in ("", "0"):
        return True  # found alive among the processes; its metrics port is not known
    return _get_ok(f"http://127.0.0.1:{port}/metrics")


def main() -> int:
    for cmdline in _cmdlines():
        args = _parley_args(cmdline)
        if args:
            return 0 if check(args) else 1
    print("no parley process found", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

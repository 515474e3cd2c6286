"""Percentiles, tables for people, and the JSON file for machines."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).parent / "results"


def percentile(values: list[float | None], q: float) -> float | None:
    """Nearest-rank percentile. A missing value (None: the event never came) counts as
    +inf, so a p95 over results with more than 5 % missing is inf, not a flattering number."""
    if not values:
        return None
    ordered = sorted(math.inf if v is None else v for v in values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def spread(values: list[float | None], qs: tuple[int, ...] = (50, 95, 99)) -> dict:
    out = {f"p{q}": percentile(values, q) for q in qs}
    present = [v for v in values if v is not None]
    out.update(n=len(values), missing=len(values) - len(present), max=max(present, default=None))
    return out


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.1f}"


def table(headers: list[str], rows: list[list]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def progress_line(headers: list[str], cells: list) -> str:
    """One row as it comes in, padded to the header widths (the final table realigns)."""
    return "  ".join(str(c).rjust(max(len(h), 5)) for c, h in zip(cells, headers))


SHORT = {"translate": "transl", "nats-server": "nats", "loadgen": "gen"}


def cpu_headers(names: list[str]) -> list[str]:
    return [f"{SHORT.get(n, n)}%" for n in names]


def cpu_cells(usage: dict, names: list[str]) -> list[str]:
    return [f"{usage[n]['cpu_pct_of_core']:.0f}" if n in usage else "-" for n in names]


def machine() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {
        "cpu_model": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _jsonable(value):
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_json(scenario: str, payload: dict, directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{scenario}-{time.strftime('%Y-%m-%d-%H%M%S')}.json"
    path.write_text(json.dumps(_jsonable(payload), indent=1) + "\n")
    return path

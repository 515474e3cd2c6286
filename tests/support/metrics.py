"""Reading a process's Prometheus /metrics as the tests check them."""

from __future__ import annotations

import urllib.request


def scrape(url: str) -> dict[str, float]:
    """Every sample of a /metrics page: `name{labels}` → value (labels as the exposition
    format orders them: alphabetically)."""
    with urllib.request.urlopen(url, timeout=5) as reply:
        lines = reply.read().decode().splitlines()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines if line and line[0] != "#"}

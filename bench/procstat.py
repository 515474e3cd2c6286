"""CPU time and peak memory of processes, read from /proc (Linux only).

CPU is counted over a process *tree*: the translate worker's Apertium pipelines are its
child processes, and their CPU would otherwise vanish from the books.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2:].split()  # the command name may hold spaces


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _status_mib(pid: int, key: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the largest resident set the process ever had."""
    return _status_mib(pid, "VmHWM:")


def rss_mib(pid: int) -> float:
    """VmRSS: the resident set now (tells a transient peak from memory that stays)."""
    return _status_mib(pid, "VmRSS:")


def busy_cpu_seconds() -> float:
    """CPU time every CPU of the machine has spent busy (not idle, not waiting on I/O)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / CLOCK_TICKS


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, grandchildren, …)."""
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent_of[int(entry)] = int(_stat_fields(int(entry))[1])
            except (OSError, ValueError, IndexError):
                continue  # exited while we looked
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, p in parent_of.items() if p == parent]
        found += children
        frontier += children
    return found


@dataclass(frozen=True)
class Sample:
    cpu_s: float  # the tree's CPU so far
    peak_rss_mib: float  # the process's own VmHWM
    children_peak_rss_mib: float  # sum of its live descendants' VmHWM
    rss_mib: float = 0.0  # the process's own VmRSS


def sample(pid: int, tree: bool = True) -> Sample:
    cpu, rss_children = cpu_seconds(pid), 0.0
    for child in descendants(pid) if tree else ():
        try:
            cpu += cpu_seconds(child)
            rss_children += peak_rss_mib(child)
        except OSError:
            continue
    return Sample(cpu, peak_rss_mib(pid), rss_children, rss_mib(pid))


def sample_all(pids: dict[str, int], own_only: tuple[str, ...] = ()) -> dict[str, Sample]:
    """`own_only` names processes whose children are not theirs to count (the load
    generator's children are the Parley processes themselves)."""
    return {name: sample(pid, tree=name not in own_only) for name, pid in pids.items()}


def usage(before: dict[str, Sample], after: dict[str, Sample], wall_s: float,
          machine_busy_s: float | None = None) -> dict[str, dict]:
    """CPU seconds used between two samples (and as % of one core), and peak RSS.

    With `machine_busy_s` (busy_cpu_seconds() after − before), an `other` entry holds
    the CPU that processes outside the benchmark used meanwhile: on a shared machine a
    number measured next to someone else's test run should say so.
    """
    out = {}
    for name, end in after.items():
        start = before.get(name, Sample(0.0, 0.0, 0.0))
        used = end.cpu_s - start.cpu_s
        out[name] = {
            "cpu_s": round(used, 3),
            "cpu_pct_of_core": round(100 * used / wall_s, 1) if wall_s > 0 else None,
            "peak_rss_mib": round(end.peak_rss_mib, 1),
            "rss_mib": round(end.rss_mib, 1),
            "children_peak_rss_mib": round(end.children_peak_rss_mib, 1),
        }
    if machine_busy_s is not None:
        other = max(0.0, machine_busy_s - sum(u["cpu_s"] for u in out.values()))
        out["other"] = {"cpu_s": round(other, 3),
                        "cpu_pct_of_core": round(100 * other / wall_s, 1) if wall_s > 0 else None,
                        "peak_rss_mib": 0.0, "rss_mib": 0.0, "children_peak_rss_mib": 0.0}
    return out

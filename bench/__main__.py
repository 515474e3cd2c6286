"""`python -m bench local|echo|assistant|soak|bushop …` (or `./dev bench …`): see docs/BENCHMARKS.md.

Each run starts its own nats-server and a fresh Parley system (edge + one worker of each
kind, as OS processes), runs the load levels against it, stops it, prints tables and
writes bench/results/<scenario>-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from bench import assistant, bushop, echo, local, soak
from bench.report import RESULTS_DIR, machine, table, write_json
from bench.system import running


def _sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    scenarios = parser.add_subparsers(dest="scenario", required=True)
    lo = scenarios.add_parser("local", help="local engines: end of speech → final, translation, audio")
    lo.add_argument("--max-sessions", type=int, default=8, help="highest concurrency tried (default 8)")
    lo.add_argument("--sentences", type=int, default=5, help="utterances per session (default 5)")
    lo.add_argument("--chunk-ms", type=int, help="the edge's chunk size (PARLEY_CHUNK_MS; default 500)")
    ec = scenarios.add_parser("echo", help="translate-echo with the benchmark engines: pipeline overhead")
    ec.add_argument("--sessions", type=_sizes, default=[1, 10, 50, 100, 200],
                    help="comma-separated session counts (default 1,10,50,100,200)")
    ec.add_argument("--utterances", type=int, default=5, help="tone+silence cycles per session (default 5)")
    asst = scenarios.add_parser("assistant", help="assistant mode, benchmark engines, fake model: "
                                "tool round trip and first reply audio")
    assistant.add_arguments(asst, _sizes)
    soak.add_arguments(scenarios.add_parser("soak", help="sessions under faults on a schedule: events lost, "
                                            "duplicated, recovery times, memory over time"))
    bushop.add_arguments(scenarios.add_parser("bushop", help="the bus hop alone: audio chunks publish → "
                                              "worker receives"), _sizes)
    for sub in (lo, ec, asst):
        sub.add_argument("--pin-core", type=int, metavar="CPU",
                         help="run every Parley process and nats-server under `taskset -c CPU`; "
                              "the load generator runs on the other cores")
        sub.add_argument("--stagger-s", type=float, default=3.0,
                         help="session starts are spread evenly over this many seconds (default 3)")
        sub.add_argument("--compression", choices=["deflate", "none"], default="deflate",
                         help="WebSocket permessage-deflate, as browsers offer it (default deflate)")
        sub.add_argument("--drain-s", type=float, default=20.0,
                         help="after the last frame, wait this long at most for results (default 20)")
        sub.add_argument("--quiet-pct", type=float, default=10.0,
                         help="before each level, wait until processes outside the benchmark use at most "
                              "this %% of a core (default 10)")
        sub.add_argument("--quiet-wait-s", type=float, default=180.0,
                         help="…but wait no longer than this (default 180)")
        sub.add_argument("--retries", type=int, default=4,
                         help="run a level again, at most this often, when processes outside the benchmark "
                              "took more than twice --quiet-pct of a core while it ran (default 4)")
        sub.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the JSON result")
    return parser


def _pin_loadgen(core: int) -> str:
    others = set(range(os.cpu_count() or 1)) - {core}
    if not others:
        raise SystemExit("--pin-core needs at least two CPUs: the load generator needs one of its own")
    os.sched_setaffinity(0, others)
    return str(core)


def _rss_table(results: list[dict]) -> str:
    usage = results[-1]["process_usage"]
    rows = [[name, u["peak_rss_mib"], u["rss_mib"], u["children_peak_rss_mib"]]
            for name, u in usage.items() if name != "other"]
    return table(["process", "peak RSS MiB", "RSS at end MiB", "children peak MiB"], rows)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.scenario == "soak":
        return soak.main(args)
    if args.scenario == "bushop":
        return bushop.main(args)
    args.compression = None if args.compression == "none" else args.compression
    cpus = _pin_loadgen(args.pin_core) if args.pin_core is not None else None
    if args.scenario == "assistant":
        return _assistant(args, cpus)
    scenario = echo if args.scenario == "echo" else local
    engines = "bench" if args.scenario == "echo" else "local"
    env = {"PARLEY_CHUNK_MS": str(args.chunk_ms)} if getattr(args, "chunk_ms", None) else {}
    log_dir = Path(tempfile.mkdtemp(prefix=f"parley-bench-{args.scenario}-"))
    started = time.time()
    print(f"bench {args.scenario}: engines={engines} pin={cpus or 'no'} logs in {log_dir}", flush=True)
    with running(engines, cpus, log_dir, env) as system:
        results = asyncio.run(scenario.run_levels(system, args))
    print()
    print(table(scenario.HEADERS, [scenario.row(r) for r in results]))
    print()
    print(_rss_table(results))
    payload = {
        "scenario": args.scenario,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1), "argv": sys.argv[1:], "machine": machine(),
        "engines": engines, "pinned_core": cpus, "compression": args.compression or "none",
        "exit_codes": system.exit_codes, "levels": results,
    }
    if args.scenario == "local":
        payload["criterion"] = " ".join(local.keeps_up.__doc__.split(":", 1)[1].split())
        payload["largest_sustained_sessions"] = local.largest_sustained(results)
        print(f"\nlargest N that keeps up in real time: {payload['largest_sustained_sessions']}")
    unclean = {k: v for k, v in system.exit_codes.items() if v != 0}
    if unclean:
        print(f"WARNING: processes did not exit cleanly: {unclean} (logs in {log_dir})")
    print(f"results: {write_json(args.scenario + ('-pinned' if cpus else ''), payload, args.out)}")
    return 0


def _assistant(args: argparse.Namespace, cpus: str | None) -> int:
    log_dir = Path(tempfile.mkdtemp(prefix="parley-bench-assistant-"))
    started = time.time()
    print(f"bench assistant: engines=bench, fake model; pin={cpus or 'no'} logs in {log_dir}", flush=True)
    results = assistant.run(args, cpus, log_dir)
    payload = {
        "scenario": "assistant",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1), "argv": sys.argv[1:], "machine": machine(),
        "engines": "bench", "pinned_core": cpus, "compression": args.compression or "none", **results,
    }
    unclean = {run: {k: v for k, v in codes.items() if v != 0} for run, codes in results["exit_codes"].items()}
    if any(unclean.values()):
        print(f"WARNING: processes did not exit cleanly: {unclean} (logs in {log_dir})")
    print(f"results: {write_json('assistant' + ('-pinned' if cpus else ''), payload, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""translate-echo (DESIGN.md "Benchmark engines"): the pipeline's own overhead.

N clients each stream `utterances` × (2 s of a 220 Hz tone, then 1 s of zeros) in 20 ms
frames at real-time pace to a system running the benchmark engines (which cost nothing).
overhead = first audio.delta of an utterance − its last tone frame sent − 300 ms, the
300 ms being the endpointing hangover that the workload definition allows for.
"""

from __future__ import annotations

import argparse

from bench.level import Level, run_clean_level, run_level
from bench.report import cpu_cells, cpu_headers, ms, progress_line, spread
from bench.scripts import echo_script
from bench.system import Running

HANGOVER_MS = 300.0  # DESIGN.md's allowance; equal to the edge's default VAD hangover
PROCESSES = ["edge", "stt", "translate", "tts", "nats-server", "loadgen", "other"]
START = {"language": "en", "target_language": "es"}


def _minus(value: float | None, delta: float) -> float | None:
    return None if value is None else value - delta


def summarise(level: Level) -> dict:
    times = level.times()
    return {
        **level.common(),
        "utterances": len(times),
        "overhead_ms": spread([_minus(t.first_audio_ms, HANGOVER_MS) for t in times]),
        "final_overhead_ms": spread([_minus(t.final_ms, HANGOVER_MS) for t in times]),
        # The same, timed from the frame that actually closed the utterance at the edge:
        # immune to the load generator sending that frame late.
        "after_close_ms": spread([None if t.first_audio_ms is None or t.vad_close_ms is None
                                  else t.first_audio_ms - t.vad_close_ms for t in times]),
        "vad_close_after_last_tone_ms": spread([t.vad_close_ms for t in times], (50, 99)),
    }


HEADERS = ["sessions", "utts", "missing", "p50", "p95", "p99", "max", "final p50", "close p99",
           *cpu_headers(PROCESSES), "lag p99"]


def row(s: dict) -> list[str]:
    o = s["overhead_ms"]
    return [s["sessions"], s["utterances"], o["missing"], *(ms(o[k]) for k in ("p50", "p95", "p99", "max")),
            ms(s["final_overhead_ms"]["p50"]), ms(s["after_close_ms"]["p99"]),
            *cpu_cells(s["process_usage"], PROCESSES), ms(s["loadgen_send_lag_ms"]["p99"])]


async def run_levels(running: Running, args: argparse.Namespace) -> list[dict]:
    options = dict(stagger_s=args.stagger_s, compression=args.compression, drain_timeout_s=args.drain_s,
                   quiet_pct=args.quiet_pct, quiet_wait_s=args.quiet_wait_s)
    clean = dict(options, retries=args.retries)
    await run_level(running, [echo_script(1)], START, **options)  # warm-up, not reported
    script = echo_script(args.utterances)
    results = []
    print("overhead in ms: first audio − last tone frame − 300 ms ('close': first audio − the frame that\n"
          "closed the utterance); cpu% of one core over the window; lag: the generator's send lag")
    print(progress_line(HEADERS, HEADERS))
    for n in args.sessions:
        level = await run_clean_level(running, [script] * n, START, **clean)
        results.append(summarise(level))
        print(progress_line(HEADERS, row(results[-1])), flush=True)
    return results

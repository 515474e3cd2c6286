"""Local engines (pocketsphinx → Apertium → espeak-ng): end of speech → each result.

Each client speaks `sentences` English sentences (RELIABLE_SENTENCES, a different order
per client), each followed by 1 s of noise-floor silence, at real-time pace, target
Spanish. Times are measured from the frame that completes the speech (see scripts.py) to
the first `transcript.final`, `translation` and `audio.delta` of the utterance.
Concurrency grows 1, 2, 3, 4, 6, 8, 12, … until a level no longer keeps up (`keeps_up`).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict

from bench.level import Level, run_clean_level, run_level
from bench.report import cpu_cells, cpu_headers, ms, progress_line, spread
from bench.scripts import rotated_sentences, speech_script
from bench.system import Running

PROCESSES = ["edge", "stt", "translate", "tts", "nats-server", "loadgen", "other"]
START = {"language": "en", "target_language": "es"}


def levels(max_sessions: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, 16, 24, …: powers of two and 1.5 × powers of two."""
    out, k = set(), 1
    while k <= max_sessions:
        out |= {k, k * 3 // 2} if k > 1 else {1}
        k *= 2
    return sorted(n for n in out if n <= max_sessions)


def keeps_up(summary: dict, base_p95_ms: float) -> bool:
    """The real-time criterion (docs/BENCHMARKS.md): every utterance got its final
    transcript, and p95 end of speech → first audio ≤ 2 × the 1-session p95 + 500 ms."""
    p95 = summary["eos_to_first_audio_ms"]["p95"]
    return (summary["missing_finals"] == 0 and p95 is not None and math.isfinite(base_p95_ms)
            and p95 <= 2 * base_p95_ms + 500)


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _wer(times) -> float | None:
    try:
        import jiwer  # a test extra; the benchmark only reports recognition quality with it
    except ImportError:
        return None
    pairs = [(t.said, (t.heard or "").lower()) for t in times if t.said]
    return round(sum(jiwer.wer(said, heard) if heard else 1.0 for said, heard in pairs) / len(pairs), 3)


def summarise(level: Level) -> dict:
    times = level.times()
    q = (50, 95)
    return {
        **level.common(),
        "utterances": len(times),
        "missing_finals": sum(1 for t in times if t.final_ms is None),
        "eos_to_final_ms": spread([t.final_ms for t in times], q),
        "eos_to_translation_ms": spread([t.translation_ms for t in times], q),
        "eos_to_first_audio_ms": spread([t.first_audio_ms for t in times], q),
        "stages_ms": {
            "eos_to_vad_close": spread([t.vad_close_ms for t in times], q),
            "vad_close_to_final": spread([_minus(t.final_ms, t.vad_close_ms) for t in times], q),
            "final_to_translation": spread([_minus(t.translation_ms, t.final_ms) for t in times], q),
            "translation_to_first_audio": spread([_minus(t.first_audio_ms, t.translation_ms)
                                                  for t in times], q),
        },
        "mean_wer": _wer(times),
        "utterance_times": [asdict(t) for t in times],
    }


HEADERS = ["sessions", "utts", "no final", "final p50", "p95", "transl p50", "p95", "audio p50", "p95",
           "keeps up", *cpu_headers(PROCESSES), "WER"]


def row(s: dict) -> list[str]:
    f, t, a = s["eos_to_final_ms"], s["eos_to_translation_ms"], s["eos_to_first_audio_ms"]
    return [s["sessions"], s["utterances"], s["missing_finals"], ms(f["p50"]), ms(f["p95"]), ms(t["p50"]),
            ms(t["p95"]), ms(a["p50"]), ms(a["p95"]), "yes" if s["keeps_up"] else "NO",
            *cpu_cells(s["process_usage"], PROCESSES), s["mean_wer"] if s["mean_wer"] is not None else "-"]


async def run_levels(running: Running, args: argparse.Namespace) -> list[dict]:
    options = dict(stagger_s=args.stagger_s, compression=args.compression, drain_timeout_s=args.drain_s,
                   quiet_pct=args.quiet_pct, quiet_wait_s=args.quiet_wait_s)
    clean = dict(options, retries=args.retries)
    # Warm-up, not reported: loads a decoder, starts the Apertium pipeline, creates consumers.
    await run_level(running, [speech_script(rotated_sentences(0, 1))], START, **options)
    results: list[dict] = []
    print("ms after the end of speech; cpu% of one core over the window")
    print(progress_line(HEADERS, HEADERS))
    for n in levels(args.max_sessions):
        scripts = [speech_script(rotated_sentences(i, args.sentences), seed=i) for i in range(n)]
        summary = summarise(await run_clean_level(running, scripts, START, **clean))
        base = results[0] if results else summary
        summary["keeps_up"] = keeps_up(summary, base["eos_to_first_audio_ms"]["p95"])
        results.append(summary)
        print(progress_line(HEADERS, row(summary)), flush=True)
        if not summary["keeps_up"]:
            break
    return results


def largest_sustained(results: list[dict]) -> int:
    passing = [r["sessions"] for r in results if r["keeps_up"]]
    return max(passing, default=0)

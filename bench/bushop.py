"""Bus hop (DESIGN.md: publish → worker receives, p99 ≤ 2 ms at 200 live sessions, 2 cores).

The hop alone, as Parley's audio takes it: an edge-like publisher (this process) and a
worker-like subscriber (another process, one subscription per session, as an STT worker
holds them) on their own nats-server. Each session publishes one 500 ms chunk of 16 kHz PCM
(an encoded `AudioChunk`, 16 KB) every 500 ms, the sessions' phases spread evenly over the
period. The chunk's first 8 PCM bytes carry the send time (`time.monotonic()`, one clock for
every process on the machine); the subscriber decodes each message as the owner's intake
does and records receive − send. Not included: the edge's and the worker's own work around
the hop (the echo benchmark measures the whole path).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats

from bench.report import RESULTS_DIR, machine, percentile, table, write_json
from bench.system import start_bus
from shared.messages import AudioChunk, decode, encode

PERIOD_S = 0.5  # one chunk per session per period: the edge's default chunk
CHUNK_BYTES = 16000  # 500 ms of 16 kHz PCM16
PREFIX = "bushop"


def _subject(n: int) -> str:
    return f"{PREFIX}.audio.s{n}"


async def subscribe(url: str, sessions: int, out: Path) -> None:
    """The worker side: one subscription per session; writes the hop times (ms) on `done`."""
    nc = await nats.connect(url)
    hops: list[float] = []
    finished = asyncio.Event()

    async def on_chunk(msg) -> None:
        chunk = decode(msg.data)
        hops.append(1000 * (time.monotonic() - struct.unpack_from("<d", chunk.pcm)[0]))

    async def on_done(msg) -> None:
        finished.set()

    for n in range(sessions):
        await nc.subscribe(_subject(n), cb=on_chunk)
    await nc.subscribe(f"{PREFIX}.done", cb=on_done)
    await nc.publish(f"{PREFIX}.ready", b"")
    await finished.wait()
    out.write_text(json.dumps(hops))
    await nc.close()


async def publish(url: str, sessions: int, seconds: float) -> dict:
    """The edge side: every session's chunk on time (absolute deadlines, no drift)."""
    nc = await nats.connect(url)
    pcm_rest = bytes(CHUNK_BYTES - 8)
    step = PERIOD_S / sessions
    began = time.monotonic()
    late: list[float] = []
    sent = 0
    for k in range(int(seconds / step)):
        due = began + k * step
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        late.append(1000 * (time.monotonic() - due))
        n = k % sessions
        chunk = AudioChunk(f"s{n}", f"s{n}-1-{k // sessions}", k // sessions, 16000,
                           struct.pack("<d", time.monotonic()) + pcm_rest)
        await nc.publish(_subject(n), encode(chunk))
        sent += 1
    await nc.flush()
    await asyncio.sleep(0.5)  # the last ones arrive
    await nc.publish(f"{PREFIX}.done", b"")
    await nc.flush()
    await nc.close()
    return {"sent": sent, "publish_lag_p99_ms": round(percentile(late, 99), 2)}


async def level(url: str, sessions: int, seconds: float, work_dir: Path) -> dict:
    out = work_dir / f"hops-{sessions}.json"
    nc = await nats.connect(url)
    ready = await nc.subscribe(f"{PREFIX}.ready", max_msgs=1)
    worker = subprocess.Popen([sys.executable, "-m", "bench.bushop", "--subscribe", url, str(sessions), str(out)])
    await ready.next_msg(timeout=30)
    await nc.close()
    sent = await publish(url, sessions, seconds)
    worker.wait(timeout=60)
    hops = json.loads(out.read_text())
    return {"sessions": sessions, "seconds": seconds, **sent, "received": len(hops),
            **{f"p{q}_ms": round(percentile(hops, q), 3) for q in (50, 95, 99)},
            "max_ms": round(max(hops), 3), "mean_ms": round(sum(hops) / len(hops), 3)}


async def wake_up_jitter(samples: int = 2000, sleep_s: float = 0.0025) -> dict:
    """How late an idle event loop wakes from a short sleep: the machine's floor for any
    hop between two Python processes."""
    late = []
    for _ in range(samples):
        t = time.monotonic()
        await asyncio.sleep(sleep_s)
        late.append(1000 * (time.monotonic() - t - sleep_s))
    return {f"p{q}_ms": round(percentile(late, q), 3) for q in (50, 99)} | {"max_ms": round(max(late), 3)}


def main(args: argparse.Namespace) -> int:
    log_dir = Path(tempfile.mkdtemp(prefix="parley-bench-bushop-"))
    started = time.time()
    bus = start_bus(None, log_dir)
    print(f"bench bushop: {args.sessions} sessions, {args.seconds} s each; logs in {log_dir}", flush=True)
    try:
        jitter = asyncio.run(wake_up_jitter())
        levels = [asyncio.run(level(bus.url, n, args.seconds, log_dir)) for n in args.sessions]
    finally:
        bus.stop()
    print(f"an idle event loop wakes late by p50 {jitter['p50_ms']} / p99 {jitter['p99_ms']} ms")
    keys = ["sessions", "sent", "received", "p50_ms", "p95_ms", "p99_ms", "max_ms", "publish_lag_p99_ms"]
    print(table(keys, [[r[k] for k in keys] for r in levels]))
    payload = {"scenario": "bushop", "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
               "duration_s": round(time.time() - started, 1), "argv": sys.argv[1:], "machine": machine(),
               "chunk_bytes": CHUNK_BYTES, "period_s": PERIOD_S, "wake_up_jitter": jitter, "levels": levels}
    print(f"results: {write_json('bushop', payload, args.out)}")
    return 0


def add_arguments(parser: argparse.ArgumentParser, sizes) -> None:
    parser.add_argument("--sessions", type=sizes, default=[50, 200, 400],
                        help="comma-separated session counts (default 50,200,400)")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each level publishes (default 30)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the JSON result")


if __name__ == "__main__":  # the subscriber process of a level
    _, flag, url, sessions, out = sys.argv
    assert flag == "--subscribe"
    asyncio.run(subscribe(url, int(sessions), Path(out)))

"""Prometheus metrics shared by every process (one registry per process)."""

import datetime

from prometheus_client import Counter, Gauge, Histogram

SESSIONS = Gauge("parley_sessions_live", "Client sessions connected to this edge")
MESSAGES_IN = Counter("parley_client_messages_total", "Client messages received", ["type"])
CLIENT_ERRORS = Counter("parley_client_errors_total", "Errors sent to clients", ["code"])
EVENTS_OUT = Counter("parley_events_out_total", "Durable events sent to clients", ["type"])
AUDIO_SHED = Counter("parley_audio_shed_total", "Audio chunks an owner that fell behind dropped", ["owner"])
PARTIALS_SHED = Counter("parley_partials_shed_total", "Partial transcripts dropped for clients reading too slowly")
WORK_DONE = Counter("parley_work_done_total", "Work items completed", ["kind"])
WORK_FAILED = Counter("parley_work_failed_total", "Work items that failed (redelivered)", ["kind"])
WORK_EXPIRED = Counter("parley_work_expired_total", "Work items dropped past deadline", ["kind"])
STAGE_SECONDS = Histogram(
    "parley_stage_seconds",
    "Time spent in one pipeline stage",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BUS_MESSAGES = Counter(
    "parley_bus_messages_total", "Messages this process published or took from NATS, by subject family",
    ["family", "direction"],
)
WORK_PENDING = Gauge("parley_work_pending", "Work waiting in the JetStream queue (consumer lag)", ["kind"])


def family(subject: str) -> str:
    """`parley.out.<sid>` → "out", `parley.work.tts` → "work.tts": no per-session labels."""
    parts = subject.split(".")
    if len(parts) > 2 and parts[1] == "work":
        return f"work.{parts[2]}"
    return parts[1] if len(parts) > 1 else subject


def since_stored(msg) -> float:
    """Seconds since JetStream stored `msg`: the time from one stage's output to now."""
    stored = msg.metadata.timestamp
    if stored.tzinfo is None:
        stored = stored.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (datetime.datetime.now(datetime.timezone.utc) - stored).total_seconds())

"""Prometheus metrics shared by every process (one registry per process)."""

from prometheus_client import Counter, Gauge, Histogram

SESSIONS = Gauge("parley_sessions_live", "Client sessions connected to this edge")
MESSAGES_IN = Counter("parley_client_messages_total", "Client messages received", ["type"])
CLIENT_ERRORS = Counter("parley_client_errors_total", "Errors sent to clients", ["code"])
EVENTS_OUT = Counter("parley_events_out_total", "Durable events sent to clients", ["type"])
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

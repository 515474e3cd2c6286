"""Process plumbing shared by every Parley process: JSON logs and stop signals."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time

from shared import telemetry


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the session, utterance and trace ids of the task that
    writes it (shared/telemetry.py); `extra={"sid": ...}` fields win."""

    FIELDS = ("sid", "utterance_id", "trace_id", "kind")

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(telemetry.log_fields())  # the session the current task works for
        for name in self.FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("nats").setLevel(logging.WARNING)
    logging.getLogger("websockets").setLevel(logging.WARNING)


async def wait_for_signal() -> None:
    """Return on the first SIGTERM or SIGINT: the caller then drains and exits 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def die_with_parent() -> None:
    """`preexec_fn` for child processes: SIGTERM when the parent dies (Linux), so a parent
    killed with SIGKILL leaves no orphan behind."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not glibc Linux: orphans are then the caller's to clean up
        pass

"""Telemetry: the context of every log line about a session, and OpenTelemetry traces.

- `bound(sid=…, utterance_id=…, traceparent=…)` puts those on every log line written
  inside it (context variables: per task, nothing to pass around; the JSON formatter in
  shared/process.py reads them).
- Traces are off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set, as
  OpenTelemetry's own exporters read it. Then `span(name, traceparent)` records a span that
  is the child of the W3C `traceparent` a message came with, exports it by OTLP/HTTP, and
  yields the `traceparent` for the next hop. Off, it only makes a new span id for the next
  hop: the SDK is not even imported, so it costs nothing.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_SID: ContextVar[str | None] = ContextVar("sid", default=None)
_UTTERANCE: ContextVar[str | None] = ContextVar("utterance_id", default=None)
_TRACEPARENT: ContextVar[str | None] = ContextVar("traceparent", default=None)

_tracer = None  # set by setup_tracing when an OTLP endpoint is configured
_provider = None


def new_traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def child_traceparent(parent: str | None) -> str:
    """Same trace, new span id: each hop is its own span."""
    if parent and parent.count("-") == 3:
        version, trace_id, _, flags = parent.split("-")
        return f"{version}-{trace_id}-{secrets.token_hex(8)}-{flags}"
    return new_traceparent()


def trace_id_of(traceparent: str | None) -> str | None:
    return traceparent.split("-")[1] if traceparent and traceparent.count("-") == 3 else None


def log_fields() -> dict[str, str]:
    """The context of the current task, for a log line."""
    fields = {"sid": _SID.get(), "utterance_id": _UTTERANCE.get(), "trace_id": trace_id_of(_TRACEPARENT.get())}
    return {name: value for name, value in fields.items() if value}


def current_traceparent() -> str | None:
    return _TRACEPARENT.get()


@contextmanager
def bound(sid: str | None = None, utterance_id: str | None = None,
          traceparent: str | None = None) -> Iterator[None]:
    """Log lines inside carry these (the values given; the others stay as they were)."""
    tokens = [var.set(value) for var, value in ((_SID, sid), (_UTTERANCE, utterance_id),
                                                (_TRACEPARENT, traceparent)) if value]
    try:
        yield
    finally:
        for token in reversed(tokens):
            token.var.reset(token)


def tracing_enabled() -> bool:
    return _tracer is not None


def setup_tracing(service_name: str, env: dict[str, str] | None = None, exporter: Any = None) -> bool:
    """Turn tracing on when an OTLP endpoint is configured (or an exporter is given, in
    tests); True when it is on. Call once per process, before any span."""
    global _tracer, _provider
    environ = os.environ if env is None else env
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if exporter is None and not endpoint:
        _tracer = None
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # reads the env
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _provider, _tracer = provider, provider.get_tracer("parley")
    return True


def shutdown_tracing() -> None:
    """Flush spans still queued (on drain)."""
    if _provider is not None:
        _provider.shutdown()


@contextmanager
def span(name: str, traceparent: str | None = None, *, sid: str | None = None,
         utterance_id: str | None = None, **attributes: Any) -> Iterator[str]:
    """One hop of a trace; yields the `traceparent` to send on with what this hop makes.
    Log lines inside carry the session, utterance and trace ids."""
    if _tracer is None:
        child = child_traceparent(traceparent)
        with bound(sid, utterance_id, child):
            yield child
        return
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = TraceContextTextMapPropagator()
    parent = propagator.extract({"traceparent": traceparent}) if traceparent else None
    ids = {k: v for k, v in (("parley.session_id", sid), ("parley.utterance_id", utterance_id)) if v}
    with _tracer.start_as_current_span(name, context=parent, attributes={**ids, **attributes}):
        carrier: dict[str, str] = {}
        propagator.inject(carrier)
        child = carrier.get("traceparent") or child_traceparent(traceparent)
        with bound(sid, utterance_id, child):
            yield child

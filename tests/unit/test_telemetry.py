"""Log context and trace propagation, with tracing off (the default) and on."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared import telemetry
from shared.process import JsonFormatter

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def line(message: str) -> dict:
    record = logging.LogRecord("parley.test", logging.INFO, __file__, 1, message, None, None)
    return json.loads(JsonFormatter().format(record))


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    telemetry.setup_tracing("parley-test", exporter=exporter)
    yield exporter
    telemetry.setup_tracing("parley-test", env={})  # off again for the other tests


def test_log_lines_carry_the_session_utterance_and_trace_they_are_about():
    assert "sid" not in line("outside")
    with telemetry.bound(sid="s1", utterance_id="s1-1-1", traceparent=PARENT):
        inside = line("inside")
        with telemetry.bound(utterance_id="s1-1-2"):
            nested = line("nested")
    assert inside["sid"] == "s1" and inside["utterance_id"] == "s1-1-1"
    assert inside["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert nested["sid"] == "s1" and nested["utterance_id"] == "s1-1-2"
    assert "sid" not in line("after")


def test_with_tracing_off_a_span_only_makes_the_next_hops_traceparent():
    assert not telemetry.tracing_enabled()
    with telemetry.span("translate", PARENT, sid="s1") as child:
        assert child.split("-")[1] == PARENT.split("-")[1] and child != PARENT
        assert line("x")["sid"] == "s1"
    with telemetry.span("stt", None) as fresh:
        assert fresh.count("-") == 3


def test_with_tracing_on_spans_chain_across_hops(spans):
    with telemetry.span("stt.final", None, sid="s1", utterance_id="u1") as first:
        pass
    with telemetry.span("translate", first, sid="s1", utterance_id="u1", target="es") as second:
        assert line("y")["trace_id"] == first.split("-")[1]
    stt, translate = spans.get_finished_spans()
    assert translate.context.trace_id == stt.context.trace_id
    assert translate.parent.span_id == stt.context.span_id
    assert f"{translate.context.span_id:016x}" == second.split("-")[2]
    assert translate.attributes["parley.session_id"] == "s1" and translate.attributes["target"] == "es"


def test_tracing_turns_on_only_with_an_endpoint():
    assert not telemetry.setup_tracing("parley-test", env={})
    assert telemetry.setup_tracing("parley-test", env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"})
    telemetry.setup_tracing("parley-test", env={})

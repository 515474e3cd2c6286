"""Traces across the NATS hops: with an OTLP endpoint set, one utterance is one trace whose
spans (stt → translate → tts, and the edge receiving each result) come from four processes
and chain parent to child."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from shared.audio import tone
from tests.support.client import ProtocolClient
from tests.support.system import ParleySystem


class Collector(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver (protobuf), keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, object]] = []  # (service name, span)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(handler) -> None:  # noqa: N805 - the server is `self`
                body = handler.rfile.read(int(handler.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    service = next(a.value.string_value for a in resource_spans.resource.attributes
                                   if a.key == "service.name")
                    for scope in resource_spans.scope_spans:
                        self.spans += [(service, span) for span in scope.spans]
                handler.send_response(200)
                handler.send_header("Content-Type", "application/x-protobuf")
                handler.send_header("Content-Length", "0")
                handler.end_headers()

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture
def collector():
    server = Collector()
    yield server
    server.shutdown()


async def test_one_utterance_is_one_trace_across_processes(nats_server, tmp_path, collector):
    system = ParleySystem(nats_server.url, None, "bench", tmp_path, env={
        "PARLEY_PREFIX": "traced", "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.server_port}",
    })
    system.start_all()
    try:
        client = await ProtocolClient.connect(system.ws_url())
        await client.start(language="en", target_language="es")
        await client.stream(tone(220, 1.0, 16000) + b"\x00\x00" * 8000, realtime=False)
        await client.wait_type("audio.done")
        await client.close()
    finally:
        assert all(code == 0 for code in system.stop_all().values())  # exit flushes the spans
    by_name = {span.name: (service, span) for service, span in collector.spans}
    assert {"stt", "translate", "tts"} <= set(by_name), sorted(by_name)
    (stt_service, stt), (tr_service, tr), (tts_service, tts) = by_name["stt"], by_name["translate"], by_name["tts"]
    assert (stt_service, tr_service, tts_service) == ("parley-stt", "parley-translate", "parley-tts")
    assert stt.trace_id == tr.trace_id == tts.trace_id
    assert tr.parent_span_id == stt.span_id and tts.parent_span_id == tr.span_id
    session = {a.key: a.value.string_value for a in tts.attributes}
    assert session["parley.utterance_id"].endswith("-1")
    delivered = {next(a.value.string_value for a in span.attributes if a.key == "parley.event"): span
                 for service, span in collector.spans if span.name == "edge.deliver" and service == "parley-edge"}
    assert {"transcript.final", "translation", "audio.done"} <= set(delivered), sorted(delivered)
    assert all(delivered[kind].trace_id == stt.trace_id for kind in ("transcript.final", "translation", "audio.done"))
    assert delivered["translation"].parent_span_id == tr.span_id  # published inside the translate span
    assert delivered["audio.done"].parent_span_id == tts.span_id

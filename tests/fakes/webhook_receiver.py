"""A webhook receiver for server-side tools: it checks Parley's signature as a real one
would (401 when it fails) and answers an order's status."""

from __future__ import annotations

import json
import time

from services.tools.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from tests.fakes.knobs import FakeHandler, FakeServer, Knobs, RecordedRequest

SECRET = "whsec-5ecret-0123456789abcdef"
ORDER = {"type": "object", "properties": {"order_id": {"type": "string"}},
         "required": ["order_id"]}


class ReceiverHandler(FakeHandler):
    """A webhook receiver: verifies the signature as a real one would (401 when it fails),
    then answers `{"order_id", "status"}`. Knobs: `hang`, `latency_s`, `status`,
    `malformed` (200 with a body that is not JSON), `reply_text` (this exact body),
    `chunk_delay_s` (the answer trickles in three pieces)."""

    def route(self, request: RecordedRequest, knobs: Knobs, failing: bool) -> None:
        try:
            self._answer(request, knobs, failing)
        except (BrokenPipeError, ConnectionResetError):  # the caller gave up, as it should
            self.close_connection = True

    def _answer(self, request: RecordedRequest, knobs: Knobs, failing: bool) -> None:
        headers = request.headers
        if not verify_signature(SECRET, headers.get(TIMESTAMP_HEADER.lower()), request.body,
                                headers.get(SIGNATURE_HEADER.lower()), time.time()):
            return self.send_json(401, {"error": "bad signature"})
        if failing and knobs.malformed:
            return self.send_body(200, b"<html>oops</html>", "text/html")
        if knobs.reply_text is not None:
            return self.send_body(200, knobs.reply_text.encode(), "application/json")
        answer = json.dumps({"order_id": request.json["arguments"]["order_id"],
                             "status": "shipped"}).encode()
        if knobs.chunk_delay_s:
            return self.send_stream([answer[:5], answer[5:10], answer[10:]],
                                    "application/json", knobs, failing)
        self.send_body(200, answer, "application/json")

    def send_error_status(self, status: int, code: str | None, request: RecordedRequest) -> None:
        self.send_json(status, {"error": code or "internal", "detail": "stack trace here"})


class FakeReceiver(FakeServer):
    handler = ReceiverHandler
    prefix = "/hooks/order"

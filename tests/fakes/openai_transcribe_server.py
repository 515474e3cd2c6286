"""A small fake of OpenAI's `POST {base}/audio/transcriptions`, for contract tests.

A real HTTP/1.1 server (stdlib `ThreadingHTTPServer`) on 127.0.0.1 and a free port, in a
daemon thread. It parses the multipart form as the API does (`file`, `model`,
`response_format`, `language`, …) and answers `{"text": …, "usage": …}`; errors carry
OpenAI's body `{"error": {"message", "type", "param", "code"}}`. A bad key's 401 quotes the
key presented (the real API masks part of it), so leak tests are strict.

    with FakeOpenAITranscribe(api_key="sk-test") as fake:
        engine = OpenAITranscriber(Secret("sk-test"), base_url=fake.base_url)
        fake.knobs.status = 503
        fake.requests[0].fields["model"], fake.requests[0].file

Knobs (`fake.knobs`): text (scripted transcript), status (answer this error status),
error_code, hang (never answer), latency_s (before answering), malformed (200 with a body
that is not JSON), usage (the `usage` object to send, None: leave it out).
Kept apart from tests/fakes/openai_server.py (chat, TTS) on purpose: stdlib only, no
shared plumbing, so either can change alone.
"""

from __future__ import annotations

import io
import json
import threading
import wave
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODELS = {"gpt-4o-mini-transcribe", "gpt-4o-transcribe", "whisper-1"}
ERRORS = {  # status → (type, code, message)
    400: ("invalid_request_error", None, "Invalid file format."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: {key}."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Not supported."),
    429: ("insufficient_quota", "insufficient_quota", "You exceeded your current quota."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded."),
}


@dataclass
class Knobs:
    text: str = "hello world"
    status: int | None = None
    error_code: str | None = None
    hang: bool = False
    latency_s: float = 0.0
    malformed: bool = False
    usage: dict | None = field(default_factory=lambda: {
        "type": "tokens", "input_tokens": 14, "output_tokens": 3, "total_tokens": 17})


@dataclass
class Upload:
    """One transcription request as the fake understood it."""

    path: str
    authorization: str | None
    fields: dict[str, str]  # the multipart text fields
    file: bytes | None  # the `file` part
    filename: str | None
    file_type: str | None  # its Content-Type

    def wav(self) -> tuple[int, int, int, bytes]:
        """(rate, channels, sample width, frames) of the uploaded WAV."""
        with wave.open(io.BytesIO(self.file)) as w:
            return (w.getframerate(), w.getnchannels(), w.getsampwidth(),
                    w.readframes(w.getnframes()))


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], tuple | None]:
    """(text fields, (file bytes, filename, content type) or None)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    fields, upload = {}, None
    for part in message.iter_parts() if message.is_multipart() else []:
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            upload = (payload, part.get_filename(), part.get_content_type())
        elif name:
            fields[name] = payload.decode()
    return fields, upload


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeOpenAITranscribe

    def log_message(self, format, *args) -> None:  # noqa: A002 - quiet test output
        pass

    def do_POST(self) -> None:
        fake, knobs = self.fake, self.fake.knobs
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fields, upload = parse_multipart(self.headers.get("Content-Type", ""), body)
        file, filename, file_type = upload or (None, None, None)
        auth = self.headers.get("Authorization")
        fake.requests.append(Upload(self.path, auth, fields, file, filename, file_type))
        if knobs.hang:
            fake.released.wait()
            self.close_connection = True
            return
        if knobs.latency_s and fake.released.wait(knobs.latency_s):
            return
        if self.path != f"{fake.prefix}/audio/transcriptions":
            return self._error(404, "unknown_url")
        if auth != f"Bearer {fake.api_key}":
            return self._error(401, key=(auth or "").removeprefix("Bearer "))
        if knobs.status:
            return self._error(knobs.status, knobs.error_code)
        if file is None or fields.get("model") not in MODELS:
            return self._error(400)
        if knobs.malformed:
            return self._send(200, b"<html>not json", "text/html")
        reply = {"text": knobs.text} | ({"usage": knobs.usage} if knobs.usage else {})
        self._send(200, json.dumps(reply).encode(), "application/json")

    def _error(self, status: int, code: str | None = None, key: str = "") -> None:
        kind, default_code, message = ERRORS.get(status, ("server_error", None, "Error."))
        error = {"message": message.format(key=key), "type": kind, "param": None,
                 "code": code or default_code}
        self._send(status, json.dumps({"error": error}).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FakeOpenAITranscribe:
    prefix = "/v1"

    def __init__(self, api_key: str = "sk-test") -> None:
        self.api_key = api_key
        self.knobs = Knobs()
        self.requests: list[Upload] = []
        self.released = threading.Event()  # set on stop: hanging handlers give up
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{self.prefix}"

    def start(self) -> FakeOpenAITranscribe:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name="fake-openai-transcribe", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FakeOpenAITranscribe:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

"""What every fake vendor server shares: knobs, a request log, and the HTTP plumbing.

A fake is a real HTTP/1.1 server (stdlib `ThreadingHTTPServer`) on 127.0.0.1 and a free
port, served from a daemon thread, so async tests reach it through a real socket:

    with FakeOpenAI(api_key="sk-test") as server:    # or server.start() / server.stop()
        server.knobs.set(status=503)                 # every knob: see `Knobs`
        ... server.url ...                           # http://127.0.0.1:<port>/v1 for OpenAI
        server.requests                              # [RecordedRequest, ...]

Knobs apply from the `from_request`-th request on (1-based), so "fail the second
sentence" is `knobs.set(status=500, from_request=2)`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field, fields, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Knobs:
    latency_s: float = 0.0  # before the response head
    status: int | None = None  # answer this error status (vendor-shaped body)
    error_code: str | None = None  # e.g. "insufficient_quota" vs "rate_limit_exceeded"
    hang: bool = False  # read the request, then never answer
    malformed: bool = False  # 200 with a payload that is not the documented shape
    chunk_delay_s: float = 0.0  # between streamed body chunks (audio, SSE events)
    stall_after_bytes: int | None = None  # stream this much body, then go silent
    cut_after_bytes: int | None = None  # stream this much body, then drop the connection
    reply_text: str | None = None  # chat / transcription text (None: a default)
    tool_calls: tuple[dict, ...] = ()  # chat: [{"name": ..., "arguments": {...}}, ...]
    after_tool_text: str | None = None  # chat: the reply when the last message is a tool
    # result ("{result}" becomes that result's content); None: tool_calls apply every time
    usage_tokens: tuple[int, int] | None = None  # chat usage (prompt, completion)
    audio: bytes | None = None  # TTS body, PCM16LE at the vendor's rate (None: a tone)
    from_request: int = 1  # failure knobs apply from this request on

    def failing(self, index: int) -> bool:
        return index >= self.from_request


@dataclass(frozen=True)
class RecordedRequest:
    index: int  # 1-based, in arrival order
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    json: object = None  # the parsed body when it was JSON
    form: dict[str, str] = field(default_factory=dict)  # multipart text fields
    files: dict[str, bytes] = field(default_factory=dict)  # multipart file fields
    arrived_at: float = 0.0  # time.monotonic() once the request's body was read
    finished_at: float | None = None  # time.monotonic() once the handler was done with it
    # (the response's last byte written; None while it is still being answered)


class _State:
    """Knobs and log behind one lock: handler threads and the test thread share them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.knobs = Knobs()
        self.log: list[RecordedRequest] = []
        self.released = threading.Event()  # set on stop: hanging handlers give up


class KnobPanel:
    """`server.knobs`: read a snapshot, change some knobs, or reset them all."""

    def __init__(self, state: _State) -> None:
        self._state = state

    def set(self, **changes) -> Knobs:
        unknown = set(changes) - {f.name for f in fields(Knobs)}
        if unknown:
            raise TypeError(f"unknown knobs {sorted(unknown)}")
        with self._state.lock:
            self._state.knobs = replace(self._state.knobs, **changes)
            return self._state.knobs

    def reset(self) -> None:
        with self._state.lock:
            self._state.knobs = Knobs()

    def snapshot(self) -> Knobs:
        with self._state.lock:
            return self._state.knobs


class FakeHandler(BaseHTTPRequestHandler):
    """Reads and logs a request, applies the generic knobs, then calls `route()`."""

    protocol_version = "HTTP/1.1"  # keep-alive and chunked bodies, as vendors speak
    state: _State  # set per server class by FakeServer
    api_key: str | None = None  # likewise; when set, requests must carry it

    def log_message(self, format, *args) -> None:  # noqa: A002 - quiet test output
        pass

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        request = self._record()
        try:
            self._handle(request)
        finally:
            self._finished(request)

    def _handle(self, request: RecordedRequest) -> None:
        with self.state.lock:
            knobs = self.state.knobs
        failing = knobs.failing(request.index)
        if failing and knobs.hang:
            self.state.released.wait()
            self.close_connection = True
            return
        if knobs.latency_s and self.state.released.wait(knobs.latency_s):
            return
        presented = request.headers.get("authorization", "")
        if self.api_key is not None and presented != f"Bearer {self.api_key}":
            return self.send_error_status(401, "invalid_api_key", request)
        if failing and knobs.status:
            return self.send_error_status(knobs.status, knobs.error_code, request)
        self.route(request, knobs, failing)

    def _record(self) -> RecordedRequest:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        arrived = time.monotonic()
        headers = {name.lower(): value for name, value in self.headers.items()}
        with self.state.lock:
            index = len(self.state.log) + 1
            request = RecordedRequest(index, self.command, self.path, headers, body,
                                      *self.parse_body(headers, body), arrived_at=arrived)
            self.state.log.append(request)
        return request

    def _finished(self, request: RecordedRequest) -> None:
        done = replace(request, finished_at=time.monotonic())
        with self.state.lock:
            log = self.state.log
            for i in range(len(log) - 1, -1, -1):  # usually the last few; gone after clear_log
                if log[i] is request:
                    log[i] = done
                    return

    def parse_body(self, headers: dict[str, str], body: bytes) -> tuple:
        """(json, form, files); vendors override for multipart."""
        if "json" in headers.get("content-type", "") or body[:1] in (b"{", b"["):
            try:
                return json.loads(body), {}, {}
            except ValueError:
                pass
        return None, {}, {}

    # -- to be provided by each vendor ----------------------------------------------------

    def route(self, request: RecordedRequest, knobs: Knobs, failing: bool) -> None:
        raise NotImplementedError

    def send_error_status(self, status: int, code: str | None, request: RecordedRequest) -> None:
        raise NotImplementedError

    # -- replies --------------------------------------------------------------------------

    def send_body(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, payload: object) -> None:
        self.send_body(status, json.dumps(payload).encode(), "application/json")

    def send_stream(self, pieces, content_type: str, knobs: Knobs, failing: bool) -> None:
        """A chunked body, piece by piece, with the streaming knobs applied."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = 0
        for piece in pieces:
            if failing and self._interrupt(sent, knobs):
                return
            if sent and knobs.chunk_delay_s and self.state.released.wait(knobs.chunk_delay_s):
                return
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
            sent += len(piece)
        self.wfile.write(b"0\r\n\r\n")

    def _interrupt(self, sent: int, knobs: Knobs) -> bool:
        if knobs.cut_after_bytes is not None and sent >= knobs.cut_after_bytes:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # mid-body: the client sees a reset
            return True
        if knobs.stall_after_bytes is not None and sent >= knobs.stall_after_bytes:
            self.state.released.wait()
            self.close_connection = True
            return True
        return False


class FakeServer:
    """A vendor fake on 127.0.0.1:<free port>, served from a daemon thread."""

    handler: type[FakeHandler]
    prefix = ""  # the path the vendor's base URL ends with, e.g. "/v1"

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key  # when set, requests must carry it
        self._state = _State()
        self.knobs = KnobPanel(self._state)
        handler = type(self.handler.__name__, (self.handler,),
                       {"state": self._state, "api_key": api_key})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.log)

    def clear_log(self) -> None:
        with self._state.lock:
            self._state.log.clear()

    def start(self) -> FakeServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._state.released.set()  # hanging and stalled handlers return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

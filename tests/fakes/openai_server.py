"""A fake OpenAI API: the wire shapes of the documented endpoints, with knobs.

- `POST /v1/chat/completions`: a `chat.completion`, or with `stream: true` an SSE stream of
  `chat.completion.chunk`s (`delta.role`, `delta.content`, `delta.tool_calls` with the
  arguments in pieces, `finish_reason`, a usage chunk when `stream_options.include_usage`,
  then `data: [DONE]`). The reply is `knobs.reply_text`, or the last user message echoed;
  `knobs.tool_calls` scripts function calls; `knobs.after_tool_text` answers tool results.
- `POST /v1/audio/speech`: `response_format: "pcm"` only; a chunked body of 24 kHz PCM16LE
  (`knobs.audio`, or a 440 Hz tone of 60 ms per input character) in 100 ms pieces.
- `POST /v1/audio/transcriptions`: multipart `file` + `model` → `{"text": ..., "usage"}`.
- Errors: `{"error": {"message", "type", "param", "code"}}` with the vendor's statuses. A
  bad key gets 401 `invalid_api_key` whose message quotes the key (the real API masks the
  middle of it; quoting it whole makes leak tests stricter).
"""

from __future__ import annotations

import json
import re
import time
from email import policy
from email.parser import BytesParser

from shared.audio import tone
from tests.fakes.knobs import FakeHandler, FakeServer, Knobs, RecordedRequest

PCM_RATE_HZ = 24000
PIECE_BYTES = PCM_RATE_HZ // 10 * 2  # 100 ms
SPEECH_S_PER_CHAR = 0.06
MAX_SPEECH_INPUT = 4096
VOICES = frozenset(
    "alloy ash ballad cedar coral echo fable marin nova onyx sage shimmer verse".split()
)

_ERRORS = {  # status → (type, default code, message)
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: {key}."),
    403: ("invalid_request_error", "unsupported_country_region_territory",
          "Country, region, or territory not supported."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}
_QUOTA = ("insufficient_quota", "insufficient_quota",
          "You exceeded your current quota, please check your plan and billing details.")


def error_body(status: int, code: str | None = None, key: str = "") -> dict:
    kind, default_code, message = _ERRORS.get(status, ("server_error", None, "Error."))
    if status == 429 and code == "insufficient_quota":
        kind, default_code, message = _QUOTA
    return {"error": {"message": message.format(key=key), "type": kind, "param": None,
                      "code": code or default_code}}


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _tool_call(index: int, call: dict) -> dict:
    arguments = call.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {"id": call.get("id", f"call_fake{index}"), "type": "function",
            "function": {"name": call["name"], "arguments": arguments}}


class _Chat:
    """One chat request's scripted answer, as a completion or as stream chunks."""

    def __init__(self, body: dict, knobs: Knobs) -> None:
        users = [m for m in body.get("messages", []) if m.get("role") == "user"]
        echo = users[-1].get("content", "") if users else ""
        echo = echo if isinstance(echo, str) else ""
        self.model = body.get("model", "")
        self.calls = [_tool_call(i, c) for i, c in enumerate(knobs.tool_calls)]
        default = None if self.calls else echo
        self.text = knobs.reply_text if knobs.reply_text is not None else default
        last = (body.get("messages") or [{}])[-1]
        if knobs.after_tool_text is not None and last.get("role") == "tool":
            self.calls, self.text = [], knobs.after_tool_text.replace("{result}", str(last.get("content")))
        prompt = _tokens(json.dumps(body.get("messages", [])))
        done = _tokens((self.text or "") + json.dumps(self.calls))
        self.usage = _usage(*(knobs.usage_tokens or (prompt, done)))
        self.finish = "tool_calls" if self.calls else "stop"
        self.head = {"id": "chatcmpl-fake", "created": int(time.time()), "model": self.model,
                     "system_fingerprint": "fp_fake"}

    def completion(self) -> dict:
        message = {"role": "assistant", "content": self.text, "refusal": None}
        if self.calls:
            message["tool_calls"] = self.calls
        choice = {"index": 0, "message": message, "logprobs": None,
                  "finish_reason": self.finish}
        return {**self.head, "object": "chat.completion", "choices": [choice],
                "usage": self.usage}

    def deltas(self):
        yield {"role": "assistant", "content": "" if self.text is not None else None}, None
        for piece in re.findall(r"\S+\s*|\s+", self.text or ""):
            yield {"content": piece}, None
        for index, call in enumerate(self.calls):
            start = {"index": index, "id": call["id"], "type": "function",
                     "function": {"name": call["function"]["name"], "arguments": ""}}
            yield {"tool_calls": [start]}, None
            arguments = call["function"]["arguments"]
            for at in range(0, len(arguments), 8):
                piece = {"index": index, "function": {"arguments": arguments[at:at + 8]}}
                yield {"tool_calls": [piece]}, None
        yield {}, self.finish

    def chunks(self, include_usage: bool):
        for delta, finish in self.deltas():
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            chunk = {**self.head, "object": "chat.completion.chunk", "choices": [choice]}
            if include_usage:
                chunk["usage"] = None
            yield chunk
        if include_usage:
            yield {**self.head, "object": "chat.completion.chunk", "choices": [],
                   "usage": self.usage}


def _sse(events) -> list[bytes]:
    return [b"data: " + json.dumps(event).encode() + b"\n\n" for event in events] + [
        b"data: [DONE]\n\n"
    ]


class OpenAIHandler(FakeHandler):
    def route(self, request: RecordedRequest, knobs: Knobs, failing: bool) -> None:
        path = request.path.split("?")[0]
        routes = {"/v1/chat/completions": self._chat, "/v1/audio/speech": self._speech,
                  "/v1/audio/transcriptions": self._transcription}
        if request.method != "POST" or path not in routes:
            return self.send_error_status(404, "unknown_url", request)
        routes[path](request, knobs, failing)

    def send_error_status(self, status: int, code: str | None, request: RecordedRequest) -> None:
        presented = request.headers.get("authorization", "").removeprefix("Bearer ")
        self.send_json(status, error_body(status, code, presented))

    def _invalid(self, message: str, code: str | None = None) -> None:
        body = error_body(400, code)
        body["error"]["message"] = message
        self.send_json(400, body)

    def _chat(self, request: RecordedRequest, knobs: Knobs, failing: bool) -> None:
        body = request.json
        if not isinstance(body, dict) or not body.get("model") or not body.get("messages"):
            return self._invalid("model and messages are required")
        chat = _Chat(body, knobs)
        streaming = bool(body.get("stream"))
        if failing and knobs.malformed:
            broken = b'data: {"id": "chatcmpl-fake", "choices": [\n\n' if streaming else (
                b'{"id": "chatcmpl-fake", "choices": [')
            kind = "text/event-stream" if streaming else "application/json"
            return self.send_body(200, broken, kind)
        if not streaming:
            return self.send_json(200, chat.completion())
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.send_stream(_sse(chat.chunks(include_usage)), "text/event-stream", knobs, failing)

    def _speech(self, request: RecordedRequest, knobs: Knobs, failing: bool) -> None:
        body = request.json if isinstance(request.json, dict) else {}
        text = body.get("input")
        if not body.get("model") or not isinstance(text, str) or body.get("voice") not in VOICES:
            return self._invalid("model, input and a known voice are required")
        if len(text) > MAX_SPEECH_INPUT:
            return self._invalid("input is too long", "string_above_max_length")
        if body.get("response_format") != "pcm":
            return self._invalid("this fake speaks response_format 'pcm' only")
        if failing and knobs.malformed:
            return self.send_json(200, {"object": "not.audio"})
        audio = knobs.audio
        if audio is None:
            audio = tone(440.0, max(0.1, SPEECH_S_PER_CHAR * len(text)), PCM_RATE_HZ)
        pieces = [audio[at:at + PIECE_BYTES] for at in range(0, len(audio), PIECE_BYTES)]
        self.send_stream(pieces, "audio/pcm", knobs, failing)

    def _transcription(self, request: RecordedRequest, knobs: Knobs, failing: bool) -> None:
        if "file" not in request.files or not request.form.get("model"):
            return self._invalid("file and model are required")
        if failing and knobs.malformed:
            return self.send_body(200, b'{"text": ', "application/json")
        text = knobs.reply_text if knobs.reply_text is not None else "hello world"
        if request.form.get("response_format") == "text":
            return self.send_body(200, text.encode(), "text/plain")
        self.send_json(200, {"text": text, "usage": _transcription_usage(request, text)})

    def parse_body(self, headers: dict[str, str], body: bytes) -> tuple:
        kind = headers.get("content-type", "")
        if not kind.startswith("multipart/form-data"):
            return super().parse_body(headers, body)
        message = BytesParser(policy=policy.HTTP).parsebytes(
            b"Content-Type: " + kind.encode() + b"\r\n\r\n" + body)
        form, files = {}, {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            data = part.get_payload(decode=True) or b""
            if part.get_filename() is None:
                form[name] = data.decode("utf-8", "replace")
            else:
                files[name] = data
        return None, form, files


def _transcription_usage(request: RecordedRequest, text: str) -> dict:
    seconds = len(request.files["file"]) / 32000  # as if 16 kHz PCM16
    if request.form.get("model") == "whisper-1":
        return {"type": "duration", "seconds": max(1, round(seconds))}
    audio_tokens = max(1, round(seconds * 10))
    return {"type": "tokens", "input_tokens": audio_tokens, "output_tokens": _tokens(text),
            "total_tokens": audio_tokens + _tokens(text),
            "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens}}


class FakeOpenAI(FakeServer):
    """`url` is the base URL an OpenAI client takes (`http://127.0.0.1:<port>/v1`)."""

    handler = OpenAIHandler
    prefix = "/v1"

"""A fake Unreal Speech API: `POST /stream`, shaped like the vendor's docs, with knobs.

The request is JSON (`Text` ≤ 1,000 characters, `VoiceId`, `Bitrate`, `Speed`, `Pitch`,
`Codec`, `Temperature`) with `Authorization: Bearer <key>`. With `Codec: pcm_s16le` the
answer is a chunked body of raw 22,050 Hz PCM16LE (`knobs.audio`, or a 330 Hz tone of
60 ms per character) in 100 ms pieces; with the default `libmp3lame` it is a stand-in
MP3 body. Errors are short plain-text bodies with the vendor's statuses.
"""

from __future__ import annotations

from shared.audio import tone
from tests.fakes.knobs import FakeHandler, FakeServer, Knobs, RecordedRequest

PCM_RATE_HZ = 22050
PIECE_BYTES = PCM_RATE_HZ // 10 * 2  # 100 ms
SPEECH_S_PER_CHAR = 0.06
MAX_TEXT = 1000
CODECS = ("libmp3lame", "pcm_mulaw", "pcm_s16le")

_MESSAGES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class UnrealSpeechHandler(FakeHandler):
    def route(self, request: RecordedRequest, knobs: Knobs, failing: bool) -> None:
        if request.method != "POST" or request.path.split("?")[0] != "/stream":
            return self.send_body(404, b"Not Found", "text/plain")
        body = request.json if isinstance(request.json, dict) else {}
        text, codec = body.get("Text"), body.get("Codec", "libmp3lame")
        if not isinstance(text, str) or not text or not body.get("VoiceId"):
            return self.send_body(400, b"Text and VoiceId are required", "text/plain")
        if len(text) > MAX_TEXT:
            return self.send_body(400, b"Text exceeds 1000 characters", "text/plain")
        if codec not in CODECS:
            return self.send_body(400, b"Unknown Codec", "text/plain")
        if failing and knobs.malformed:
            return self.send_json(200, {"message": "not audio"})
        if codec != "pcm_s16le":  # the fake does not encode; enough to tell formats apart
            return self.send_body(200, b"ID3" + bytes(512), "audio/mpeg")
        audio = knobs.audio
        if audio is None:
            audio = tone(330.0, max(0.1, SPEECH_S_PER_CHAR * len(text)), PCM_RATE_HZ)
        pieces = [audio[at:at + PIECE_BYTES] for at in range(0, len(audio), PIECE_BYTES)]
        self.send_stream(pieces, "audio/L16", knobs, failing)

    def send_error_status(self, status: int, code: str | None, request: RecordedRequest) -> None:
        message = code or _MESSAGES.get(status, "Error")
        self.send_body(status, message.encode(), "text/plain")


class FakeUnrealSpeech(FakeServer):
    """`url` is the base URL the adapter takes (`http://127.0.0.1:<port>`)."""

    handler = UnrealSpeechHandler

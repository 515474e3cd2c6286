"""Streaming TTS over OpenAI `POST {base_url}/audio/speech` with `response_format: pcm`.

The text goes out a sentence per request, so the first sentence's audio is playing while
the rest is still being asked for; each response body is resampled from the vendor's 24 kHz
as it arrives and handed on in ≤ 200 ms chunks. One attempt per request (retries and
fallback live elsewhere); a failure after audio went out is raised too, never papered over.

The vendor-neutral streaming pieces (`text_pieces`, `PcmStream`, `stream_body`, `speak`)
serve the other HTTP synthesizers as well.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import httpx

from services.tts.providers.http_stream import (
    check_request,
    speak,
    stream_body,
    text_pieces,
)
from shared.http_errors import openai_error
from shared.languages import BENCH_LANGUAGES
from shared.secrets import Secret
from shared.usage import Usage, record

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini-tts"
DEFAULT_VOICE = "alloy"
PCM_RATE_HZ = 24000  # `pcm`: 24 kHz, 16-bit signed little-endian, mono
MAX_INPUT_CHARS = 4096
OPENAI_VOICES = frozenset(
    "alloy ash ballad cedar coral echo fable marin nova onyx sage shimmer verse".split()
)


# ---- OpenAI payloads (pure) -------------------------------------------------------------


def pick_voice(session_voice: str | None, default: str) -> str:
    """The session's voice when OpenAI has one of that name, else the configured one."""
    wanted = (session_voice or "").strip().lower()
    return wanted if wanted in OPENAI_VOICES else default


def speech_request(model: str, voice: str, text: str, instructions: str | None = None) -> dict:
    body = {"model": model, "input": text, "voice": voice, "response_format": "pcm"}
    if instructions:  # gpt-4o-mini-tts only; tts-1 rejects it
        body["instructions"] = instructions
    return body


# ---- the adapter (I/O) ------------------------------------------------------------------


class OpenAISynthesizer:
    """Synthesizer over OpenAI speech; its voices speak every language the model knows."""

    languages = BENCH_LANGUAGES

    def __init__(
        self,
        api_key: Secret,
        base_url: str = DEFAULT_BASE_URL,
        model: str = DEFAULT_MODEL,
        voice: str = DEFAULT_VOICE,
        http: httpx.AsyncClient | None = None,
        timeout_s: float = 10.0,
        name: str = "openai",
        instructions: str | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.name, self.model, self.voice = name, model, voice
        self.instructions = instructions
        self._key = api_key
        self._url = base_url.rstrip("/") + "/audio/speech"
        self._timeout_s = timeout_s
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(timeout_s))

    def __repr__(self) -> str:
        return f"OpenAISynthesizer(name={self.name!r}, model={self.model!r}, voice={self.voice!r})"

    async def synthesize(
        self, text: str, language: str, voice: str | None, sample_rate: int
    ) -> AsyncIterator[bytes]:
        check_request(self.name, self.languages, language, sample_rate)
        chosen = pick_voice(voice, self.voice)
        for piece in text_pieces(text, MAX_INPUT_CHARS):
            body = speech_request(self.model, chosen, piece, self.instructions)
            audio = speak(self._post(body), PCM_RATE_HZ, sample_rate, "openai")
            async with aclosing(audio):  # a listener who stops early frees the connection
                async for chunk in audio:
                    yield chunk
            record(Usage(provider="openai", model=self.model, capability="tts",
                         characters=len(piece)))

    def _post(self, body: dict) -> AsyncIterator[bytes]:
        headers = {"Authorization": f"Bearer {self._key.reveal()}"}
        return stream_body(self._http, self._url, body, headers, self._timeout_s, "openai",
                           lambda status, raw: openai_error(status, raw, self._key))

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

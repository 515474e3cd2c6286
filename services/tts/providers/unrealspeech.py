"""Streaming TTS over Unreal Speech `POST {base_url}/stream` with `Codec: pcm_s16le`.

The stream endpoint takes at most 1,000 characters and answers with raw 16-bit PCM at
22,050 Hz (the docs' figure for `pcm_s16le`; `source_rate_hz` overrides it should the
vendor change it). Text goes out a sentence per request so audio starts after the first
sentence; each body is resampled as it arrives and handed on in ≤ 200 ms chunks. One
attempt per request; a failure after audio went out is raised, never papered over.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing

import httpx

from services.tts.providers.http_stream import (
    check_request,
    speak,
    stream_body,
    text_pieces,
)
from shared.errors import ProviderError
from shared.http_errors import redact, status_error
from shared.secrets import Secret
from shared.usage import Usage, record

DEFAULT_BASE_URL = "https://api.v8.unrealspeech.com"
DEFAULT_VOICE = "Scarlett"
PCM_RATE_HZ = 22050
MAX_TEXT_CHARS = 1000
CODEC = "pcm_s16le"
_DETAIL_CHARS = 120

# Voice ids by the language they speak: the v8 catalogue, plus the earlier English voices.
VOICES: dict[str, tuple[str, ...]] = {
    "en": ("Autumn", "Melody", "Hannah", "Emily", "Ivy", "Kaitlyn", "Luna", "Willow",
           "Lauren", "Sierra", "Noah", "Jasper", "Caleb", "Ronan", "Ethan", "Daniel", "Zane",
           "Scarlett", "Liv", "Amy", "Dan", "Will"),
    "zh": ("Mei", "Lian", "Ting", "Jing", "Wei", "Jian", "Hao", "Sheng"),
    "es": ("Lucía", "Mateo", "Javier"),
    "fr": ("Élodie",),
    "hi": ("Ananya", "Priya", "Arjun", "Rohan"),
    "it": ("Giulia", "Luca"),
    "pt": ("Camila", "Thiago", "Rafael"),
}  # fmt: skip


# ---- Unreal Speech payloads (pure) ------------------------------------------------------


def pick_voice(
    session_voice: str | None, language: str, default: str,
    voices: Mapping[str, tuple[str, ...]] = VOICES,
) -> str:
    """The session's voice, else the configured one, if it speaks `language`; else the
    language's first voice. Names match case-insensitively ("sierra" → "Sierra")."""
    candidates = voices.get(language.split("-")[0].lower(), ())
    if not candidates:
        raise ProviderError(f"unrealspeech has no voice for {language!r}")
    by_name = {name.casefold(): name for name in candidates}
    for wanted in (session_voice, default):
        if wanted and wanted.strip().casefold() in by_name:
            return by_name[wanted.strip().casefold()]
    return candidates[0]


def stream_request(
    text: str, voice: str, *, bitrate: str = "192k", speed: float = 0.0,
    pitch: float = 1.0, temperature: float = 0.25,
) -> dict:
    return {
        "Text": text,
        "VoiceId": voice,
        "Bitrate": bitrate,  # ignored for PCM, but part of the documented request
        "Speed": speed,  # -1.0 … 1.0, 0 = the voice's own pace
        "Pitch": pitch,  # 0.5 … 1.5
        "Codec": CODEC,
        "Temperature": temperature,  # 0.1 … 0.8: lower = steadier pronunciation
    }


def unrealspeech_error(status: int, body: bytes, secret: Secret | None = None) -> ProviderError:
    """Unreal Speech answers errors with a short text (or nothing): keep a redacted start."""
    detail = " ".join(body.decode("utf-8", "replace").split())[:_DETAIL_CHARS]
    return status_error("unrealspeech", status, redact(detail, secret))


# ---- the adapter (I/O) ------------------------------------------------------------------


class UnrealSpeechSynthesizer:
    """Synthesizer over Unreal Speech's low-latency stream endpoint."""

    def __init__(
        self,
        api_key: Secret,
        base_url: str = DEFAULT_BASE_URL,
        voice: str = DEFAULT_VOICE,
        http: httpx.AsyncClient | None = None,
        timeout_s: float = 10.0,
        name: str = "unrealspeech",
        *,
        speed: float = 0.0,
        pitch: float = 1.0,
        temperature: float = 0.25,
        bitrate: str = "192k",
        source_rate_hz: int = PCM_RATE_HZ,
        voices: Mapping[str, tuple[str, ...]] = VOICES,
    ) -> None:
        if timeout_s <= 0 or source_rate_hz <= 0:
            raise ValueError("timeout_s and source_rate_hz must be positive")
        self.name, self.voice = name, voice
        self.languages = frozenset(voices)
        self._voices = dict(voices)
        self._options = {"bitrate": bitrate, "speed": speed, "pitch": pitch,
                         "temperature": temperature}
        self._source_rate_hz = source_rate_hz
        self._key = api_key
        self._url = base_url.rstrip("/") + "/stream"
        self._timeout_s = timeout_s
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(timeout_s))

    def __repr__(self) -> str:
        return f"UnrealSpeechSynthesizer(name={self.name!r}, voice={self.voice!r})"

    async def synthesize(
        self, text: str, language: str, voice: str | None, sample_rate: int
    ) -> AsyncIterator[bytes]:
        check_request(self.name, self.languages, language, sample_rate)
        chosen = pick_voice(voice, language, self.voice, self._voices)
        for piece in text_pieces(text, MAX_TEXT_CHARS):
            body = stream_request(piece, chosen, **self._options)
            audio = speak(self._post(body), self._source_rate_hz, sample_rate, "unrealspeech")
            async with aclosing(audio):
                async for chunk in audio:
                    yield chunk
            record(Usage(provider="unrealspeech", model="stream", capability="tts",
                         characters=len(piece)))

    def _post(self, body: dict) -> AsyncIterator[bytes]:
        headers = {"Authorization": f"Bearer {self._key.reveal()}"}
        return stream_body(self._http, self._url, body, headers, self._timeout_s,
                           "unrealspeech",
                           lambda status, raw: unrealspeech_error(status, raw, self._key))

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

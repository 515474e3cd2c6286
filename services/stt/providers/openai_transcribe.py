"""Per-utterance STT: OpenAI `POST {base}/audio/transcriptions` (gpt-4o-mini-transcribe,
gpt-4o-transcribe, whisper-1).

A session buffers its utterance's PCM; `finish()` uploads it as an in-memory WAV in a
multipart form (`file`, `model`, `response_format=json`, `language` when it is an ISO-639-1
code, which is what the API takes) and returns `text`. No partials: the endpoint has none.
One request per utterance, never retried here: retries have one owner, the fallback chain.
"""

from __future__ import annotations

import asyncio
import io
import wave

import httpx

from shared.errors import (
    ProviderBadResponse,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
)
from shared.http_errors import openai_error
from shared.languages import BENCH_LANGUAGES, primary_tag
from shared.secrets import Secret
from shared.usage import Usage, record


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """PCM16LE mono as a WAV file, in memory."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return out.getvalue()


def transcript(response: httpx.Response) -> tuple[str, int, int]:
    """(text, input tokens, output tokens) of a 200 answer; anything else is a bad response.
    gpt-4o models report `usage` in tokens, whisper-1 in seconds (we count audio anyway)."""
    try:
        body = response.json()
        text, usage = body["text"], body.get("usage") or {}
        tokens = (usage.get("input_tokens"), usage.get("output_tokens")) \
            if usage.get("type") == "tokens" else (0, 0)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ProviderBadResponse("OpenAI transcription answer is not the documented JSON") \
            from exc
    if not isinstance(text, str) or not all(type(t) is int for t in tokens):
        raise ProviderBadResponse("OpenAI transcription answer has the wrong field types")
    return text, *tokens


class OpenAITranscribeSession:
    """One speaker; each utterance is one upload."""

    def __init__(self, engine: OpenAITranscriber, language: str) -> None:
        self._engine = engine
        self._language = primary_tag(language)
        self._pcm = bytearray()

    async def feed(self, pcm: bytes) -> str | None:
        if len(pcm) % 2:
            raise ValueError("PCM16 audio must have an even number of bytes")
        self._pcm += pcm
        return None

    async def finish(self) -> str:
        pcm, self._pcm = bytes(self._pcm), bytearray()
        if not pcm:
            return ""
        language = self._language if len(self._language) == 2 else None
        return await self._engine.transcribe(pcm, language)

    async def close(self) -> None:
        self._pcm = bytearray()


class OpenAITranscriber:
    """SttEngine over OpenAI's transcription endpoint; share one `http` client per worker."""

    sample_rate = 16000
    languages = BENCH_LANGUAGES

    def __init__(self, api_key: Secret, base_url: str = "https://api.openai.com/v1",
                 model: str = "gpt-4o-mini-transcribe", http: httpx.AsyncClient | None = None,
                 timeout_s: float = 10.0, name: str = "openai") -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._key, self.model, self.name, self.timeout_s = api_key, model, name, timeout_s
        self.url = f"{base_url.rstrip('/')}/audio/transcriptions"
        self._http, self._own_http = http, http is None

    def open(self, language: str) -> OpenAITranscribeSession:
        if primary_tag(language) not in self.languages:
            raise ProviderError(f"OpenAI transcription does not take {language!r}")
        return OpenAITranscribeSession(self, language)

    async def warm_up(self) -> None:
        """Nothing to load; the HTTP client connects at the first upload."""

    async def close(self) -> None:
        """Close the HTTP client, if this engine made it (a shared one is its owner's)."""
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def transcribe(self, pcm: bytes, language: str | None) -> str:
        if self._http is None:
            self._http = httpx.AsyncClient()
        form = {"model": self.model, "response_format": "json"}
        if language:
            form["language"] = language
        files = {"file": ("utterance.wav", wav_bytes(pcm, self.sample_rate), "audio/wav")}
        headers = {"Authorization": f"Bearer {self._key.reveal()}"}
        try:  # httpx bounds each phase; the outer bound covers the whole exchange
            async with asyncio.timeout(self.timeout_s):
                response = await self._http.post(self.url, data=form, files=files,
                                                 headers=headers, timeout=self.timeout_s)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ProviderTimeout(f"OpenAI transcription took over {self.timeout_s} s") from exc
        except httpx.HTTPError as exc:
            raise ProviderUnavailable("OpenAI could not be reached") from exc
        if response.status_code != 200:
            raise openai_error(response.status_code, response.content, self._key)
        text, input_tokens, output_tokens = transcript(response)
        record(Usage("openai", self.model, "stt", audio_seconds=len(pcm) / (2 * self.sample_rate),
                     input_tokens=input_tokens, output_tokens=output_tokens))
        return text.strip()

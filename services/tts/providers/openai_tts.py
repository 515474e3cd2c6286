"""Streaming TTS over OpenAI `POST {base_url}/audio/speech` with `response_format: pcm`.

The text goes out a sentence per request, so the first sentence's audio is playing while
the rest is still being asked for; each response body is resampled from the vendor's 24 kHz
as it arrives and handed on in ≤ 200 ms chunks. One attempt per request (retries and
fallback live elsewhere); a failure after audio went out is raised too, never papered over.

The vendor-neutral streaming pieces (`text_pieces`, `PcmStream`, `stream_body`, `speak`)
serve the other HTTP synthesizers as well.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing

import httpx
import numpy as np
import soxr

from services.translate.providers.openai_chat import openai_error, transport_error
from services.tts.providers.espeak import pcm_chunks, split_sentences
from shared.errors import ProviderBadResponse, ProviderError
from shared.languages import BENCH_LANGUAGES, primary_tag
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
CHUNK_S = 0.2
_NOT_AUDIO = ("application/json", "text/", "application/problem")

ErrorForStatus = Callable[[int, bytes], ProviderError]


# ---- vendor-neutral streaming pieces ----------------------------------------------------


def text_pieces(text: str, max_chars: int) -> list[str]:
    """Sentences of `text`, each cut at word boundaries to fit a vendor's request limit."""
    return [piece for sentence in split_sentences(text) for piece in _fit(sentence, max_chars)]


def _fit(sentence: str, max_chars: int) -> Iterator[str]:
    while len(sentence) > max_chars:
        cut = sentence.rfind(" ", 0, max_chars + 1)
        cut = cut if cut > 0 else max_chars  # one endless word: cut it anywhere
        yield sentence[:cut].strip()
        sentence = sentence[cut:].strip()
    if sentence:
        yield sentence


class PcmStream:
    """PCM16LE at `from_hz` in, arbitrary network pieces; ≤ `chunk_s` chunks at `to_hz` out.

    Keeps a byte split between two reads and the resampler's filter state, so a clip fed
    piecewise sounds as if it had been resampled whole.
    """

    def __init__(self, from_hz: int, to_hz: int, chunk_s: float = CHUNK_S) -> None:
        if from_hz <= 0 or to_hz <= 0:
            raise ValueError("sample rates must be positive")
        self._soxr = None
        if from_hz != to_hz:
            self._soxr = soxr.ResampleStream(from_hz, to_hz, 1, dtype="int16", quality="HQ")
        self._to_hz, self._chunk_s = to_hz, chunk_s
        self._chunk_bytes = max(2, int(to_hz * chunk_s) * 2)
        self._odd = b""
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        data = self._odd + data
        even = len(data) - len(data) % 2
        self._odd = data[even:]
        self._pending += self._convert(data[:even], last=False)
        return self._take(final=False)

    def finish(self) -> list[bytes]:
        """The rest, the last chunk possibly short; a dangling odd byte is dropped."""
        self._pending += self._convert(b"", last=True)
        return self._take(final=True)

    def _convert(self, pcm: bytes, last: bool) -> bytes:
        if self._soxr is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2")
        return self._soxr.resample_chunk(samples, last=last).astype("<i2").tobytes()

    def _take(self, final: bool) -> list[bytes]:
        whole = len(self._pending) - len(self._pending) % self._chunk_bytes
        cut = len(self._pending) if final else whole
        ready = bytes(self._pending[:cut])
        del self._pending[:cut]
        return list(pcm_chunks(ready, self._to_hz, self._chunk_s)) if ready else []


def is_audio(content_type: str) -> bool:
    """False for the JSON/text/HTML answers that gateways return instead of audio."""
    kind = content_type.split(";")[0].strip().lower()
    return not kind.startswith(_NOT_AUDIO) and "html" not in kind


async def stream_body(
    http: httpx.AsyncClient, url: str, body: dict, headers: dict[str, str],
    timeout_s: float, vendor: str, error_for: ErrorForStatus,
) -> AsyncIterator[bytes]:
    """The audio body of one POST as it arrives, every failure in the error vocabulary.

    The wait for the response head is bounded as a whole; after it, each read is bounded
    by httpx's read timeout, so a long clip may stream for longer than `timeout_s`.
    """
    request = http.build_request("POST", url, json=body, headers=headers, timeout=timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            response = await http.send(request, stream=True)
    except (TimeoutError, httpx.RequestError) as exc:
        raise transport_error(vendor, exc) from exc
    try:
        if response.status_code != 200:
            raise error_for(response.status_code, await _error_body(response, timeout_s))
        if not is_audio(response.headers.get("content-type", "")):
            raise ProviderBadResponse(f"{vendor} answered without audio")
        async for data in response.aiter_bytes():
            yield data
    except httpx.RequestError as exc:
        raise transport_error(vendor, exc) from exc
    finally:
        await response.aclose()


async def _error_body(response: httpx.Response, timeout_s: float) -> bytes:
    try:
        async with asyncio.timeout(timeout_s):
            return await response.aread()
    except (TimeoutError, httpx.RequestError):
        return b""  # the status alone decides


async def speak(
    body: AsyncIterator[bytes], from_hz: int, to_hz: int, vendor: str
) -> AsyncIterator[bytes]:
    """One response body's PCM as resampled ≤ 200 ms chunks; no audio at all is an error.

    `body` is closed on the way out, so a listener who stops early frees the connection.
    """
    stream, received = PcmStream(from_hz, to_hz), 0
    async with aclosing(body):
        async for data in body:
            received += len(data)
            for chunk in stream.feed(data):
                yield chunk
    if received < 2:
        raise ProviderBadResponse(f"{vendor} answered with no audio")
    for chunk in stream.finish():
        yield chunk


def check_request(name: str, languages: frozenset[str], language: str, sample_rate: int) -> None:
    if sample_rate <= 0:
        raise ValueError("sample_rate must be positive")
    if primary_tag(language) not in languages:
        raise ProviderError(f"{name} cannot speak {language!r}")


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

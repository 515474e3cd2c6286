"""Pieces every HTTP text-to-speech adapter shares: text cut to a vendor's request limit,
a streaming resampler, and a response body turned into ≤ 200 ms chunks at the caller's rate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing

import httpx
import numpy as np
import soxr

from services.tts.providers.espeak import pcm_chunks, split_sentences
from shared.errors import ProviderBadResponse, ProviderError
from shared.http_errors import transport_error
from shared.languages import primary_tag

CHUNK_S = 0.2
_NOT_AUDIO = ("application/json", "text/", "application/problem")

ErrorForStatus = Callable[[int, bytes], ProviderError]


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

"""Local TTS: libespeak-ng from the espeakng-loader wheel, driven through ctypes.

libespeak-ng keeps global state (one current voice, one callback) and is not thread-safe,
so the process has one `_Library` and every synthesis holds its lock. Synthesis runs in a
worker thread so the event loop never waits on it: ~3–5 ms a sentence, at 22050 Hz,
resampled to the caller's rate. Text is spoken a sentence at a time, so the first chunk is
ready after the first sentence rather than after the whole text.
"""

from __future__ import annotations

import asyncio
import ctypes
import re
import threading
from collections.abc import AsyncIterator, Iterator

import espeakng_loader

from shared.audio import resample
from shared.errors import ProviderError
from shared.languages import primary_tag

_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_Synth returns when done; samples go to the callback
_BUFFER_MS = 200
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_EE_OK = 0
_CHUNK_S = 0.2

# espeak-ng lacks these languages; a neighbour's voice reads their spelling acceptably.
STAND_IN_VOICES = {"gl": "es", "sh": "hr"}

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Voice(ctypes.Structure):
    # `languages` is a packed list of (priority byte, NUL-terminated name), so a raw pointer.
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


def _declare(lib: ctypes.CDLL) -> None:
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
        ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
    ]  # fmt: skip
    lib.espeak_Synth.restype = ctypes.c_int


def _voice_languages(voice: _Voice) -> Iterator[str]:
    address = voice.languages
    while address and ctypes.c_ubyte.from_address(address).value:  # priority 0 ends it
        name = ctypes.string_at(address + 1)
        yield name.decode("ascii", "replace").lower()
        address += len(name) + 2


class _Library:
    """The process's one libespeak-ng: global state, hence one lock around all use."""

    def __init__(self) -> None:
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        _declare(self._lib)
        data_path = espeakng_loader.get_data_path().encode()
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path, 0)
        if rate <= 0:
            raise ProviderError("libespeak-ng failed to initialise")
        self.sample_rate = rate
        self._lock = threading.Lock()
        self._pieces: list[bytes] = []
        self._voice: str | None = None
        self._callback = _SynthCallback(self._collect)  # referenced here so C never dangles
        self._lib.espeak_SetSynthCallback(self._callback)
        self.language_names = frozenset(self._list_languages())

    def _collect(self, wav, count: int, _events) -> int:
        if wav and count > 0:
            self._pieces.append(ctypes.string_at(wav, count * 2))
        return 0  # 0 = go on

    def _list_languages(self) -> Iterator[str]:
        voices = self._lib.espeak_ListVoices(None)
        index = 0
        while voices[index]:
            yield from _voice_languages(voices[index].contents)
            index += 1

    def synthesize(self, text: str, voice: str, rate_wpm: int) -> bytes:
        """PCM16LE at `sample_rate` for one piece of text (blocking; call from a thread)."""
        data = text.replace("\0", " ").encode("utf-8") + b"\0"
        with self._lock:
            if voice != self._voice:  # loading a voice reads its dictionary: skip repeats
                self._voice = None  # a failed load may leave a half-set voice behind
                if self._lib.espeak_SetVoiceByName(voice.encode("utf-8")) != _EE_OK:
                    raise ProviderError(f"espeak-ng has no voice {voice!r}")
                self._voice = voice
            self._lib.espeak_SetParameter(_PARAM_RATE, rate_wpm, 0)
            self._pieces = []
            err = self._lib.espeak_Synth(
                data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            if err != _EE_OK:
                raise ProviderError(f"espeak-ng synthesis failed ({err})")
            return b"".join(self._pieces)


_library: _Library | None = None
_library_guard = threading.Lock()


def _shared_library() -> _Library:
    global _library
    with _library_guard:
        if _library is None:
            _library = _Library()
        return _library


def split_sentences(text: str) -> list[str]:
    """Sentences (and lines) of `text`, so speech can start before the whole text is done."""
    parts = re.split(r"(?<=[.!?;:…])\s+|\n+", text)
    return [part.strip() for part in parts if part.strip()]


def pcm_chunks(pcm: bytes, sample_rate: int, chunk_s: float = _CHUNK_S) -> Iterator[bytes]:
    size = max(2, int(sample_rate * chunk_s) * 2)
    for start in range(0, len(pcm), size):
        yield pcm[start : start + size]


class EspeakSynthesizer:
    """Synthesizer over libespeak-ng; `rate_wpm` is espeak's speaking rate (default 175)."""

    name = "espeak"

    def __init__(self, rate_wpm: int = 175) -> None:
        self._espeak = _shared_library()
        self.rate_wpm = rate_wpm
        names = self._espeak.language_names
        tags = {primary_tag(n) for n in names}
        tags |= {tag for tag, stand_in in STAND_IN_VOICES.items() if stand_in in names}
        self.languages = frozenset(tags)

    def voice_for(self, language: str) -> str:
        """espeak voice name for a BCP-47 tag: the exact tag if espeak knows it (en-us)."""
        names = self._espeak.language_names
        tag, primary = language.lower(), primary_tag(language)
        for candidate in (tag, primary, STAND_IN_VOICES.get(primary)):
            if candidate in names:
                return candidate
        raise ProviderError(f"espeak-ng cannot speak {language!r}")

    def render(self, text: str, language: str, voice: str | None, sample_rate: int) -> bytes:
        """The whole of `text` as one clip, blocking (for fixtures and offline use)."""
        voice_name = voice or self.voice_for(language)
        return b"".join(self._render(s, voice_name, sample_rate) for s in split_sentences(text))

    def _render(self, sentence: str, voice: str, sample_rate: int) -> bytes:
        pcm = self._espeak.synthesize(sentence, voice, self.rate_wpm)
        return resample(pcm, self._espeak.sample_rate, sample_rate)

    async def synthesize(
        self, text: str, language: str, voice: str | None, sample_rate: int
    ) -> AsyncIterator[bytes]:
        voice_name = voice or self.voice_for(language)
        for sentence in split_sentences(text):
            pcm = await asyncio.to_thread(self._render, sentence, voice_name, sample_rate)
            for chunk in pcm_chunks(pcm, sample_rate):
                yield chunk

    async def close(self) -> None:
        """Nothing to release: the library stays loaded for the process's lifetime."""

"""Per-session audio cutter: energy endpointing and fixed-size chunks (DESIGN.md).

Pure: PCM16LE bytes in, actions out; the audio itself is the clock, so no time is passed.

- The input is split into 20 ms frames. At rates that are not multiples of 50 Hz a frame
  cannot hold exactly 20 ms; frame k then ends at sample floor((k + 1) · rate / 50), so
  frames differ by one sample and never drift. A remainder waits for the next call.
- A frame is speech when its RMS ≥ `threshold_rms` (int16 scale). The first speech frame
  opens an utterance, which begins with up to `preroll_ms` of the audio just before it.
- Once `hangover_ms` of non-speech follows speech, the utterance ends at that very frame:
  the chunk in progress is flushed at once, marked last, so the 500 ms chunking never
  delays the end of speech. Choice: the hangover frames stay in the utterance (they are
  already buffered, and trailing silence helps a recogniser finalise); the last chunk is
  therefore never empty after a natural stop, only possibly after `commit()`.
- Chunks hold `chunk_ms` of audio each (the pre-roll counts towards the first), except
  the last, which holds what is left.
- An utterance longer than `max_utterance_ms` is cut there, as if committed, so the audio
  kept for STT failover replay stays bounded even under a noise that never falls silent.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

FRAME_MS = 20
_FRAMES_PER_S = 1000 // FRAME_MS


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    utterance: int  # 1, 2, … per session


@dataclass(frozen=True, slots=True)
class Chunk:
    utterance: int
    index: int  # 0, 1, … within the utterance
    pcm: bytes
    last: bool


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    utterance: int


Action = SpeechStarted | Chunk | SpeechStopped


class Chunker:
    """Cuts one session's input audio into utterances and chunks; see the module doc."""

    def __init__(self, sample_rate: int, *, chunk_ms: int = 500, threshold_rms: float = 500.0,
                 hangover_ms: int = 300, preroll_ms: int = 200,
                 max_utterance_ms: int = 30_000) -> None:
        for name, ms in (("chunk_ms", chunk_ms), ("hangover_ms", hangover_ms),
                         ("max_utterance_ms", max_utterance_ms)):
            if ms < FRAME_MS or ms % FRAME_MS:
                raise ValueError(f"{name} must be a positive multiple of {FRAME_MS}, not {ms}")
        if preroll_ms < 0 or preroll_ms % FRAME_MS:
            raise ValueError(f"preroll_ms must be a multiple of {FRAME_MS}, not {preroll_ms}")
        if sample_rate < _FRAMES_PER_S:
            raise ValueError(f"sample_rate must be at least {_FRAMES_PER_S} Hz")
        self.sample_rate = sample_rate
        self._chunk_frames = chunk_ms // FRAME_MS
        self._hangover_frames = hangover_ms // FRAME_MS
        self._max_frames = max_utterance_ms // FRAME_MS
        # Frames compare their sum of squares with threshold² · samples: no sqrt, no division.
        self._threshold_sq = float(threshold_rms) ** 2
        self._preroll: deque[bytes] = deque(maxlen=preroll_ms // FRAME_MS)
        self._rest = b""  # bytes of the next, incomplete frame
        self._frame_no = 0  # frames cut so far in the session: places the next boundary
        self._utterances = 0
        self._current: int | None = None  # the utterance in progress
        self._buffer: list[bytes] = []  # frames of the chunk in progress
        self._next_index = 0  # of the next chunk in the utterance in progress
        self._silent_frames = 0
        self._utterance_frames = 0

    @property
    def utterance(self) -> int | None:
        """Number of the utterance in progress, or None between utterances."""
        return self._current

    def feed(self, pcm: bytes) -> list[Action]:
        """Take any whole number of PCM16LE samples; return what they caused, in order."""
        if len(pcm) % 2:
            raise ValueError("PCM16LE input must hold whole 2-byte samples")
        data = self._rest + pcm
        frames = self._cut(data)
        used = sum(map(len, frames))
        self._rest = data[used:]
        actions: list[Action] = []
        for frame, speech in zip(frames, self._speech_flags(data[:used], frames)):
            actions += self._step(frame, bool(speech))
        return actions

    def commit(self) -> list[Action]:
        """End the utterance in progress now (push-to-talk); without one, do nothing."""
        return self._finish() if self._current is not None else []

    def pending_pcm(self) -> bytes:
        """Audio of the utterance in progress not yet emitted as a chunk."""
        return b"".join(self._buffer)

    def _cut(self, data: bytes) -> list[bytes]:
        frames, pos, k = [], 0, self._frame_no
        while True:
            size = 2 * (((k + 1) * self.sample_rate) // 50 - (k * self.sample_rate) // 50)
            if pos + size > len(data):
                break
            frames.append(data[pos:pos + size])
            pos, k = pos + size, k + 1
        self._frame_no = k
        return frames

    def _speech_flags(self, audio: bytes, frames: list[bytes]) -> np.ndarray:
        if not frames:
            return np.zeros(0, dtype=bool)
        samples = np.frombuffer(audio, dtype="<i2").astype(np.int64)
        sizes = np.fromiter((len(f) // 2 for f in frames), dtype=np.int64, count=len(frames))
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        energy = np.add.reduceat(samples * samples, starts)  # one sum per frame
        return energy >= self._threshold_sq * sizes

    def _step(self, frame: bytes, speech: bool) -> list[Action]:
        if self._current is None:
            if not speech:
                self._preroll.append(frame)
                return []
            return self._start(frame)
        self._buffer.append(frame)
        self._utterance_frames += 1
        self._silent_frames = 0 if speech else self._silent_frames + 1
        if (self._silent_frames >= self._hangover_frames
                or self._utterance_frames >= self._max_frames):
            return self._finish()
        if len(self._buffer) >= self._chunk_frames:
            return [self._emit(last=False)]
        return []

    def _start(self, frame: bytes) -> list[Action]:
        self._utterances += 1
        self._current = self._utterances
        self._buffer = [*self._preroll, frame]
        self._preroll.clear()
        self._next_index, self._silent_frames, self._utterance_frames = 0, 0, 1
        actions: list[Action] = [SpeechStarted(self._current)]
        while len(self._buffer) >= self._chunk_frames:  # a pre-roll longer than a chunk
            actions.append(self._emit(last=False))
        return actions

    def _emit(self, *, last: bool) -> Chunk:
        assert self._current is not None
        taken = len(self._buffer) if last else self._chunk_frames
        chunk = Chunk(self._current, self._next_index, b"".join(self._buffer[:taken]), last)
        del self._buffer[:taken]
        self._next_index += 1
        return chunk

    def _finish(self) -> list[Action]:
        utterance = self._current
        assert utterance is not None
        last = self._emit(last=True)
        self._current = None
        # The pre-roll was cleared at the start: frames of this utterance never open the next.
        return [last, SpeechStopped(utterance)]

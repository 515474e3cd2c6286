"""What each benchmark client says: pre-sliced 20 ms frames plus the frames that matter.

Scripts are built once, before any connection opens, so the load generator does no audio
work while it streams. For every utterance a script knows two frames:
- `eos`: the frame whose sending completes the speech (the last tone frame; the frame
  ending exactly at the last speech sample);
- `closes`: the frame at which the edge's VAD ends the utterance, found by running the
  edge's own (pure) `Chunker` over the script with the edge's settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from services.edge.chunker import Chunk, Chunker
from shared.audio import add_noise_floor, tone
from shared.config import Settings
from tests.speech import NOISE_SIGMA, PADDING_S, RELIABLE_SENTENCES, synthesize_speech

RATE_HZ = 16000
FRAME_MS = 20
FRAME_SAMPLES = RATE_HZ * FRAME_MS // 1000
FRAME_BYTES = 2 * FRAME_SAMPLES


@dataclass(frozen=True)
class Script:
    frames: tuple[bytes, ...]
    eos: tuple[int, ...]  # per utterance (n = 1, 2, …): the frame that ends the speech
    closes: tuple[int, ...]  # per utterance: the frame at which the edge's VAD ends it
    texts: tuple[str, ...] = ()  # what is said, when it is speech

    @property
    def duration_s(self) -> float:
        return len(self.frames) * FRAME_MS / 1000


def _frames(pcm: bytes) -> tuple[bytes, ...]:
    assert len(pcm) % FRAME_BYTES == 0
    return tuple(pcm[i:i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES))


def vad_closes(frames: tuple[bytes, ...]) -> tuple[int, ...]:
    """Index of the frame after which the edge flushes each utterance's last chunk."""
    s = Settings.from_env()  # the edge reads the same environment
    chunker = Chunker(RATE_HZ, chunk_ms=s.chunk_ms, threshold_rms=s.vad_rms,
                      hangover_ms=s.vad_hangover_ms, preroll_ms=s.vad_preroll_ms)
    closes = []
    for k, frame in enumerate(frames):
        closes += [k for action in chunker.feed(frame) if isinstance(action, Chunk) and action.last]
    return tuple(closes)


def _checked(frames: tuple[bytes, ...], eos: list[int], texts: tuple[str, ...] = ()) -> Script:
    closes = vad_closes(frames)
    if len(closes) != len(eos) or any(not e < c for e, c in zip(eos, closes)):
        raise ValueError(f"the edge's VAD would cut this script into other utterances: "
                         f"speech ends at frames {eos}, VAD closes at {closes}")
    return Script(frames, tuple(eos), closes, texts)


@lru_cache(maxsize=4)
def echo_script(utterances: int, tone_s: float = 2.0, silence_s: float = 1.0) -> Script:
    """DESIGN.md's translate-echo: 220 Hz tone, then digital silence, repeated."""
    cycle = tone(220.0, tone_s, RATE_HZ) + bytes(2 * round(silence_s * RATE_HZ))
    per_cycle, tone_frames = len(cycle) // FRAME_BYTES, round(tone_s * 1000) // FRAME_MS
    eos = [u * per_cycle + tone_frames - 1 for u in range(utterances)]
    return _checked(_frames(cycle * utterances), eos)


def _noise(samples: int, seed: int) -> bytes:
    return add_noise_floor(bytes(2 * samples), sigma=NOISE_SIGMA, seed=seed)


@lru_cache(maxsize=16)
def speech_script(sentences: tuple[str, ...], seed: int = 0, gap_s: float = 1.0) -> Script:
    """Sentences back to back, each followed by `gap_s` of noise-floor "silence".

    synthesize_speech pads its speech with PADDING_S (300 ms) of noise at both ends, so the
    speech ends PADDING_S before its clip does. A few noise samples (< one frame) are put
    in front of each clip so that the speech ends exactly on a frame boundary: the `eos`
    frame's last sample is the last sample of speech.
    """
    pcm, eos = bytearray(), []
    for j, text in enumerate(sentences):
        clip = synthesize_speech(text, RATE_HZ, seed=seed + j)
        speech_end = len(clip) // 2 - round(PADDING_S * RATE_HZ)  # in samples, within clip
        offset = len(pcm) // 2
        lead = -(offset + speech_end) % FRAME_SAMPLES
        pcm += _noise(lead, seed + 100 + j) + clip
        eos.append((offset + lead + speech_end) // FRAME_SAMPLES - 1)
        pcm += _noise(round(gap_s * RATE_HZ), seed + 200 + j)
    pcm += _noise(-(len(pcm) // 2) % FRAME_SAMPLES, seed + 300)
    return _checked(_frames(bytes(pcm)), eos, sentences)


def rotated_sentences(client: int, count: int) -> tuple[str, ...]:
    """Client i says RELIABLE_SENTENCES i, i+1, … (so concurrent sessions differ)."""
    return tuple(RELIABLE_SENTENCES[(client + j) % len(RELIABLE_SENTENCES)] for j in range(count))

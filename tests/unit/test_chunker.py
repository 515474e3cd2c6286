"""Audio cutter (services/edge/chunker.py): endpointing, chunking, pre-roll, replay state."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.edge.chunker import Chunk, Chunker, SpeechStarted, SpeechStopped


def tone(ms: int, rate: int = 16000, amplitude: int = 8000, hz: int = 220) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def silence(ms: int, rate: int = 16000) -> bytes:
    return bytes(2 * (rate * ms // 1000))


def level(ms: int, value: int, rate: int = 16000) -> bytes:
    """Constant samples: RMS is exactly |value|."""
    return np.full(rate * ms // 1000, value, dtype="<i2").tobytes()


def frames_of(pcm: bytes, rate: int = 16000) -> list[bytes]:
    """20 ms frames, cut the way the chunker places boundaries (exact at any rate)."""
    ends = [2 * (k * rate // 50) for k in range(len(pcm) // 2 * 50 // rate + 2)]
    return [pcm[a:b] for a, b in zip(ends, ends[1:]) if b <= len(pcm)]


def feed_frames(chunker: Chunker, pcm: bytes, rate: int = 16000) -> list[tuple[int, object]]:
    """Feed 20 ms frames; return (frame index, action) pairs."""
    return [(i, action) for i, frame in enumerate(frames_of(pcm, rate))
            for action in chunker.feed(frame)]


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000, 11025, 22050])
def test_tone_then_silence_is_one_utterance_cut_in_500_ms_chunks(rate):
    audio = tone(2000, rate) + silence(1000, rate)
    events = feed_frames(Chunker(rate), audio, rate)
    half = frames_of(audio, rate)
    body = lambda a, b: b"".join(half[a:b])  # noqa: E731 - frames a..b-1
    assert events == [
        (0, SpeechStarted(1)),
        (24, Chunk(1, 0, body(0, 25), last=False)),
        (49, Chunk(1, 1, body(25, 50), last=False)),
        (74, Chunk(1, 2, body(50, 75), last=False)),
        (99, Chunk(1, 3, body(75, 100), last=False)),
        # 2 s of tone is frames 0–99; the 15th silent frame (114) completes 300 ms of silence
        # and flushes at once the hangover frames, marked last.
        (114, Chunk(1, 4, body(100, 115), last=True)),
        (114, SpeechStopped(1)),
    ]
    if rate % 50 == 0:
        assert {len(a.pcm) for _, a in events[1:5]} == {rate}  # 500 ms of 2-byte samples


def test_speech_threshold_is_inclusive_at_rms_500():
    assert Chunker(16000).feed(level(20, 499) + level(20, -499)) == []
    assert Chunker(16000).feed(level(20, -500)) == [SpeechStarted(1)]
    assert Chunker(16000, threshold_rms=1000).feed(level(20, 999)) == []


def test_a_pause_shorter_than_the_hangover_keeps_the_utterance():
    audio = tone(300) + silence(280) + tone(300) + silence(300)
    events = [a for _, a in feed_frames(Chunker(16000), audio)]
    assert [type(a) for a in events] == [SpeechStarted, Chunk, Chunk, Chunk, SpeechStopped]
    assert {a.utterance for a in events} == {1}
    assert b"".join(a.pcm for a in events if isinstance(a, Chunk)) == audio


def test_pre_roll_brings_the_200_ms_before_speech():
    quiet = (np.random.default_rng(1).normal(0, 30, 16000)).astype("<i2").tobytes()  # 1 s
    audio = quiet + tone(1000) + silence(400)
    events = feed_frames(Chunker(16000), audio)
    assert events[0] == (50, SpeechStarted(1))
    first = events[1]
    # 10 pre-roll frames + 15 speech frames make the first 500 ms chunk, at frame 64.
    assert first == (64, Chunk(1, 0, audio[2 * 12800:2 * 20800], last=False))
    chunks = [a for _, a in events if isinstance(a, Chunk)]
    assert b"".join(c.pcm for c in chunks) == audio[2 * 12800:2 * (32000 + 4800)]


@pytest.mark.parametrize(("preroll_ms", "lead_ms", "kept_ms"), [
    (200, 60, 60), (200, 0, 0), (0, 500, 0), (100, 500, 100),
])
def test_pre_roll_takes_what_there_is(preroll_ms, lead_ms, kept_ms):
    chunker = Chunker(16000, preroll_ms=preroll_ms)
    chunker.feed(silence(lead_ms) + tone(100))
    assert chunker.pending_pcm() == silence(kept_ms) + tone(100)


def test_two_utterances_are_numbered_1_and_2_and_do_not_share_audio():
    # The gap is 320 ms: 300 ms of hangover end utterance 1, leaving one idle frame of
    # pre-roll for utterance 2 (never frames that already belong to utterance 1).
    audio = tone(1000) + silence(320) + tone(600) + silence(300)
    events = [a for _, a in feed_frames(Chunker(16000), audio)]
    assert [a for a in events if not isinstance(a, Chunk)] == [
        SpeechStarted(1), SpeechStopped(1), SpeechStarted(2), SpeechStopped(2)]
    by_utterance = {n: b"".join(a.pcm for a in events if isinstance(a, Chunk) and a.utterance == n)
                    for n in (1, 2)}
    assert by_utterance[1] == audio[:2 * 16000 * 13 // 10]
    assert by_utterance[2] == audio[2 * 16000 * 13 // 10:]
    assert [a.index for a in events if isinstance(a, Chunk) and a.utterance == 2] == [0, 1]


def test_commit_mid_speech_ends_the_utterance_now():
    chunker = Chunker(16000)
    events = [a for _, a in feed_frames(chunker, tone(700))]
    assert events == [SpeechStarted(1), Chunk(1, 0, tone(700)[:16000], last=False)]
    assert chunker.utterance == 1
    assert chunker.commit() == [Chunk(1, 1, tone(700)[16000:], last=True), SpeechStopped(1)]
    assert chunker.utterance is None
    assert chunker.commit() == []
    assert chunker.feed(tone(20)) == [SpeechStarted(2)]  # still talking: a new utterance


def test_commit_without_speech_does_nothing():
    chunker = Chunker(16000)
    assert chunker.commit() == []
    chunker.feed(silence(300) + level(10, 3000))  # half a frame of loud audio: not yet judged
    assert chunker.commit() == []
    assert chunker.feed(level(10, 3000)) == [SpeechStarted(1)]


def test_commit_on_a_chunk_boundary_sends_an_empty_last_chunk():
    chunker = Chunker(16000)
    chunker.feed(tone(500))
    assert chunker.commit() == [Chunk(1, 1, b"", last=True), SpeechStopped(1)]


def test_pending_audio_tracks_the_utterance_in_progress():
    chunker = Chunker(16000)
    audio = tone(1200)
    emitted = [a for a in chunker.feed(audio) if isinstance(a, Chunk)]
    assert [c.index for c in emitted] == [0, 1]
    assert chunker.pending_pcm() == audio[32000:]
    chunker.feed(silence(300))
    assert chunker.pending_pcm() == b""


def test_an_endless_utterance_is_cut_at_max_utterance_ms():
    chunker = Chunker(16000, max_utterance_ms=1000)
    events = feed_frames(chunker, tone(1100))
    assert (49, SpeechStopped(1)) in events
    assert (49, Chunk(1, 1, tone(1100)[16000:32000], last=True)) in events
    assert events[-1] == (50, SpeechStarted(2))


def test_chunks_shorter_than_the_pre_roll():
    chunker = Chunker(16000, chunk_ms=20, preroll_ms=200)
    actions = chunker.feed(silence(400) + tone(20))
    assert actions[0] == SpeechStarted(1)
    assert [(c.index, len(c.pcm)) for c in actions[1:]] == [(i, 640) for i in range(11)]


def test_odd_input_and_bad_settings_are_refused():
    with pytest.raises(ValueError):
        Chunker(16000).feed(b"\x00")
    for kwargs in ({"chunk_ms": 30}, {"chunk_ms": 0}, {"hangover_ms": 0},
                   {"preroll_ms": -20}, {"preroll_ms": 10}, {"max_utterance_ms": 0}):
        with pytest.raises(ValueError):
            Chunker(16000, **kwargs)


segments = st.lists(st.tuples(st.sampled_from(["tone", "silence", "level"]),
                              st.integers(1, 900)), min_size=1, max_size=8)


def render(parts: list[tuple[str, int]], rate: int) -> bytes:
    make = {"tone": lambda ms: tone(ms, rate), "silence": lambda ms: silence(ms, rate),
            "level": lambda ms: level(ms, 501, rate)}
    return b"".join(make[kind](ms) for kind, ms in parts)


@settings(max_examples=150, deadline=None)
@given(segments, st.lists(st.integers(1, 3000), min_size=1, max_size=40),
       st.sampled_from([8000, 16000, 11025, 44100]), st.sampled_from([20, 100, 500]))
def test_any_split_gives_the_same_actions_as_20_ms_frames(parts, sizes, rate, chunk_ms):
    audio = render(parts, rate)
    reference = [a for _, a in feed_frames(Chunker(rate, chunk_ms=chunk_ms), audio, rate)]
    chunker, pos, i, actions = Chunker(rate, chunk_ms=chunk_ms), 0, 0, []
    while pos < len(audio):
        size = 2 * sizes[i % len(sizes)]
        actions += chunker.feed(audio[pos:pos + size])
        pos, i = pos + size, i + 1
    assert actions == reference
    # Each utterance's chunks are contiguous, numbered from 0, and only the last is marked.
    for n in {a.utterance for a in actions}:
        chunks = [a for a in actions if isinstance(a, Chunk) and a.utterance == n]
        assert [c.index for c in chunks] == list(range(len(chunks)))
        assert b"".join(c.pcm for c in chunks) in audio
        assert [c.last for c in chunks[:-1]] == [False] * (len(chunks) - 1)

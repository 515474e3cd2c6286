"""shared.audio: pure PCM16LE helpers."""

import numpy as np
import pytest

from shared import audio


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2")


def test_tone_has_exact_length_and_sine_rms():
    pcm = audio.tone(440, 0.5, 16000, amplitude=8000)
    assert len(pcm) == 16000  # 8000 samples × 2 bytes
    assert audio.rms(pcm) == pytest.approx(8000 / np.sqrt(2), rel=0.01)


def test_tone_peaks_at_its_frequency():
    pcm = audio.tone(440, 1.0, 24000)
    spectrum = np.abs(np.fft.rfft(samples(pcm)))
    assert np.argmax(spectrum) == 440  # 1 s of audio: bin k is k Hz


@pytest.mark.parametrize("from_hz,to_hz", [(22050, 16000), (16000, 24000), (48000, 8000)])
def test_resample_scales_length_and_keeps_the_signal(from_hz, to_hz):
    pcm = audio.tone(300, 1.0, from_hz)
    out = audio.resample(pcm, from_hz, to_hz)
    assert abs(len(out) // 2 - to_hz) <= 2
    assert audio.rms(out) == pytest.approx(audio.rms(pcm), rel=0.02)


def test_resample_is_identity_at_equal_rates_and_on_empty_input():
    pcm = audio.tone(440, 0.1, 16000)
    assert audio.resample(pcm, 16000, 16000) == pcm
    assert audio.resample(b"", 16000, 24000) == b""


def test_rms_of_silence_and_of_nothing_is_zero():
    assert audio.rms(bytes(3200)) == 0.0
    assert audio.rms(b"") == 0.0


def test_odd_byte_count_is_rejected():
    with pytest.raises(ValueError):
        audio.rms(b"\x00\x01\x02")
    with pytest.raises(ValueError):
        audio.resample(b"\x00", 16000, 8000)


def test_noise_floor_is_faint_reproducible_and_seeded():
    silence = bytes(32000)
    noisy = audio.add_noise_floor(silence, sigma=30, seed=1)
    assert len(noisy) == len(silence)
    assert audio.rms(noisy) == pytest.approx(30, rel=0.05)
    assert noisy == audio.add_noise_floor(silence, sigma=30, seed=1)
    assert noisy != audio.add_noise_floor(silence, sigma=30, seed=2)


def test_noise_floor_saturates_instead_of_wrapping():
    loud = np.full(1000, 32767, dtype="<i2").tobytes()
    assert samples(audio.add_noise_floor(loud, sigma=500)).min() > 30000


def test_duration():
    assert audio.duration_s(bytes(32000), 16000) == 1.0
    assert audio.duration_s(audio.tone(440, 0.25, 24000), 24000) == 0.25

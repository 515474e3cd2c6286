"""Pure helpers for PCM16LE mono audio (the only sample format inside Parley)."""

from __future__ import annotations

import numpy as np
import soxr


def _samples(pcm: bytes) -> np.ndarray:
    if len(pcm) % 2:
        raise ValueError("PCM16 audio must have an even number of bytes")
    return np.frombuffer(pcm, dtype="<i2")


def resample(pcm: bytes, from_hz: int, to_hz: int) -> bytes:
    """Resample a whole clip; identity when the rates are equal."""
    if from_hz <= 0 or to_hz <= 0:
        raise ValueError("sample rates must be positive")
    if from_hz == to_hz or not pcm:
        return bytes(pcm)
    out = soxr.resample(_samples(pcm), from_hz, to_hz, quality="HQ")
    return out.astype("<i2", copy=False).tobytes()


def rms(pcm: bytes) -> float:
    """Root mean square on the int16 scale (0.0 for an empty clip)."""
    samples = _samples(pcm)
    if samples.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def tone(freq_hz: float, duration_s: float, sample_rate: int, amplitude: int = 8000) -> bytes:
    """A sine tone of exactly round(duration_s * sample_rate) samples."""
    n = round(duration_s * sample_rate)
    t = np.arange(n, dtype=np.float64) / sample_rate
    wave = amplitude * np.sin(2 * np.pi * freq_hz * t)
    return np.round(wave).astype("<i2").tobytes()


def add_noise_floor(pcm: bytes, sigma: float = 30, seed: int = 0) -> bytes:
    """Add faint Gaussian noise: digital silence between words confuses pocketsphinx."""
    samples = _samples(pcm).astype(np.float64)
    noise = np.random.default_rng(seed).normal(0.0, sigma, samples.size)
    return np.clip(np.round(samples + noise), -32768, 32767).astype("<i2").tobytes()


def duration_s(pcm: bytes, sample_rate: int) -> float:
    """Length of a clip in seconds."""
    return len(pcm) / 2 / sample_rate

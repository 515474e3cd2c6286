"""A whole Parley system with local engines, every process kind its own OS process."""

from __future__ import annotations

import wave

import pytest

from tests.speech import synthesize_speech
from tests.support.system import ParleySystem

SENTENCE = "i would like a cup of coffee please"


@pytest.fixture(scope="session")
def parley(nats_server, redis_server, tmp_path_factory):
    system = ParleySystem(nats_server.url, redis_server.url, "local", tmp_path_factory.mktemp("logs"))
    system.start_all()
    system.start_edge("edge2")
    system.wait_ready("edge2")
    yield system
    codes = system.stop_all()
    assert all(code == 0 for code in codes.values()), f"unclean exits: {codes}"


@pytest.fixture(scope="session")
def parley_url(parley) -> str:
    return parley.url()


@pytest.fixture(scope="session")
def speech_text() -> str:
    return SENTENCE


@pytest.fixture(scope="session")
def speech_pcm() -> bytes:
    return synthesize_speech(SENTENCE, sample_rate=16000)


@pytest.fixture(scope="session")
def speech_wav(speech_pcm, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("speech") / "sentence.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(speech_pcm + b"\x00\x00" * 16000 * 2)
    return str(path)

"""The benchmark engines (DESIGN.md "Benchmark engines"), their registries and errors."""

import time

import numpy as np
import pytest

from services.stt import engines as stt_engines
from services.stt.providers.bench import BenchSttEngine
from services.translate import engines as translate_engines
from services.translate.providers.bench import BenchTranslator
from services.tts import engines as tts_engines
from services.tts.providers.bench import BenchSynthesizer
from shared.config import BenchDelays, Settings
from shared.errors import ParleyError, ProviderError, ProviderTimeout
from shared.http_clients import HttpClients
from shared.languages import supports_pair
from shared.provider_config import ProviderSettings

REQUIRED = {"en", "es", "ca", "gl", "eo", "hr", "sr", "bs", "sh", "de", "fr", "it", "pt", "zh"}


async def test_stt_names_utterances_per_session():
    engine = BenchSttEngine()
    first, second = engine.open("en"), engine.open("es-MX")
    assert await first.feed(bytes(16000)) is None
    assert [await first.finish(), await first.finish()] == ["utterance 1", "utterance 2"]
    assert await second.finish() == "utterance 1"
    await first.close()
    await second.close()


async def test_stt_waits_its_delay():
    session = BenchSttEngine(delay_ms=50).open("en")
    started = time.monotonic()
    assert await session.finish() == "utterance 1"
    assert time.monotonic() - started >= 0.045


def test_stt_language_set_is_broad_and_checked():
    engine = BenchSttEngine()
    assert REQUIRED <= engine.languages
    with pytest.raises(ProviderError):
        engine.open("xx-unknown")


async def test_translator_prefixes_the_target():
    translator = BenchTranslator()
    assert await translator.translate("hello there", "en", "es") == "[es] hello there"
    assert supports_pair(translator.pairs(), "en", "gl") and supports_pair(translator.pairs(), "gl", "en")
    assert await translator.translate("x", "gl", "en") == "[en] x"
    with pytest.raises(ProviderError):
        await translator.translate("hi", "en", "en")
    await translator.close()


async def test_translator_waits_its_delay():
    started = time.monotonic()
    assert await BenchTranslator(delay_ms=50).translate("a", "en", "fr") == "[fr] a"
    assert time.monotonic() - started >= 0.045


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 48000])
async def test_synthesizer_gives_one_chunk_of_exactly_500_ms_of_440_hz(rate):
    chunks = [c async for c in BenchSynthesizer().synthesize("any text", "de", None, rate)]
    assert len(chunks) == 1
    assert len(chunks[0]) == rate  # 0.5 s × rate samples × 2 bytes
    spectrum = np.abs(np.fft.rfft(np.frombuffer(chunks[0], dtype="<i2")))
    assert np.argmax(spectrum) * 2 == 440  # 0.5 s of audio: bin k is 2k Hz


async def test_synthesizer_waits_its_delay_and_skips_blank_text():
    synthesizer = BenchSynthesizer(delay_ms=50)
    started = time.monotonic()
    assert len([c async for c in synthesizer.synthesize("hi", "en", None, 16000)]) == 1
    assert time.monotonic() - started >= 0.045
    assert [c async for c in synthesizer.synthesize("  ", "en", None, 16000)] == []
    assert REQUIRED <= synthesizer.languages


def test_registries_build_bench_engines_and_local_chains():
    bench = Settings(engines="bench", bench=BenchDelays(stt_ms=1, translate_ms=2, tts_ms=3))
    http = HttpClients(1.0)
    assert stt_engines.build(bench, http).delay_ms == 1
    assert translate_engines.build(bench, http).delay_ms == 2
    assert tts_engines.build(bench, http).delay_ms == 3
    local = Settings(providers=ProviderSettings.load({}))
    assert stt_engines.build(local, http).name == "pocketsphinx"
    assert translate_engines.build(local, http).name == "apertium"
    assert tts_engines.build(local, http).name == "espeak"
    with pytest.raises(ValueError):
        Settings(engines="cloud")  # names are checked once, where settings are made


def test_keys_turn_on_the_cloud_chains():
    keyed = Settings(providers=ProviderSettings.load(
        {"OPENAI_API_KEY": "k", "ASSEMBLYAI_API_KEY": "k", "UNREAL_SPEECH_API_KEY": "k"}))
    http = HttpClients(1.0)
    for registry, names in ((stt_engines, ["assemblyai", "openai:gpt-4o-mini-transcribe", "pocketsphinx"]),
                            (translate_engines, ["openai:gpt-4.1-nano", "openai:gpt-4.1-mini", "apertium"]),
                            (tts_engines, ["unrealspeech", "openai:gpt-4o-mini-tts", "espeak"])):
        chain = registry.build(keyed, http)
        assert chain.name == "fallback" and list(chain.states()) == names


def test_error_vocabulary():
    assert ProviderError("x").code == "provider_unavailable" and not ProviderError("x").retryable
    assert ProviderTimeout("x").code == "provider_unavailable" and ProviderTimeout("x").retryable
    assert ProviderError("died", retryable=True).retryable
    assert isinstance(ProviderTimeout("x"), ParleyError)
    with pytest.raises(ValueError):

        class Bad(ParleyError, code="not_a_protocol_code"):
            pass

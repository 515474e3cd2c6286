"""The local engines, run for real: Apertium, espeak-ng, pocketsphinx."""

import asyncio

import jiwer
import pytest

from services.stt.providers.pocketsphinx import PocketsphinxEngine
from services.translate.providers.apertium import (
    ApertiumPipeline,
    ApertiumTranslator,
    null_flush_script,
    pair_of_mode,
)
from services.tts.providers.espeak import EspeakSynthesizer, split_sentences
from shared import audio
from shared.errors import ProviderError, ProviderTimeout
from tests.speech import RELIABLE_SENTENCES, synthesize_speech

# ---------------------------------------------------------------- Apertium


@pytest.fixture(scope="module")
async def translator():
    engine = ApertiumTranslator()
    yield engine
    await engine.close()


@pytest.mark.parametrize(
    "mode,pair",
    [
        ("eng-spa", ("en", "es")),
        ("spa-eng", ("es", "en")),
        ("en-gl", ("en", "gl")),
        ("eng-hbs", ("en", "sh")),
        ("eng-hbs_HR", ("en", "hr")),
        ("eng-hbs_SR", ("en", "sr")),
        ("eng-hbs_BS", ("en", "bs")),
        ("isl-eng", ("is", "en")),
        ("eu-en", ("eu", "en")),
        ("eng-cat_valencia", None),
        ("spa-eng_US", None),
        ("en-eo-bytecode", None),
        ("eo-en-j", None),
        ("Cyrl-Latn", None),
    ],
)
def test_mode_names_map_to_bcp47_pairs(mode, pair):
    assert pair_of_mode(mode) == pair


def test_every_stage_gets_null_flush_once():
    mode = (
        "lt-proc 'a|b.bin' | apertium-tagger -g $2 'x.prob'"
        " | apertium-pretransfer | lt-proc -z $1 'g'\n"
    )
    assert null_flush_script(mode) == (
        "lt-proc -z 'a|b.bin' | apertium-tagger -z -g $2 'x.prob' "
        "| apertium-pretransfer -z | lt-proc -z $1 'g'"
    )


def test_installed_pairs_are_offered(translator):
    pairs = translator.pairs()
    wanted = [("en", "es"), ("es", "en"), ("en", "ca"), ("en", "gl"), ("en", "eo"), ("en", "hr")]
    assert set(wanted) <= pairs


@pytest.mark.parametrize(
    "text,expected",
    [("Hello world", "hola"), ("The house is red.", "casa"), ("The house is red.", "roja")],
)
async def test_english_to_spanish(translator, text, expected):
    assert expected in (await translator.translate(text, "en", "es")).lower()


async def test_other_directions(translator):
    assert "house" in (await translator.translate("La casa es roja.", "es", "en")).lower()
    assert "casa" in (await translator.translate("The house is red.", "en", "ca")).lower()
    assert "domo" in (await translator.translate("The house is red.", "en", "eo")).lower()


async def test_stream_format_characters_are_safe(translator):
    text = "Look [here] at a/b, ^up$ and \\back @home <tag> {x}."
    out = await translator.translate(text, "en", "es")
    for fragment in ["[", "]", "/b", "^", "$", "\\", "@", "<", ">", "{x}"]:
        assert fragment in out
    # the stream is still in step afterwards
    assert "casa" in (await translator.translate("The house is red.", "en", "es")).lower()


async def test_many_sentences_in_a_row_stay_in_order(translator):
    for n in range(40):
        out = await translator.translate(f"The house {n} is red.", "en", "es")
        assert str(n) in out and "casa" in out.lower()


async def test_two_pairs_concurrently(translator):
    spanish = [translator.translate(f"The house {n} is red.", "en", "es") for n in range(10)]
    catalan = [translator.translate(f"The house {n} is red.", "en", "ca") for n in range(10)]
    results = await asyncio.gather(*spanish, *catalan)
    for n, out in enumerate(results[:10]):
        assert str(n) in out and "casa" in out and " es " in out
    for n, out in enumerate(results[10:]):
        assert str(n) in out and "casa" in out and " és " in out


async def test_blank_and_unsupported(translator):
    assert await translator.translate("   ", "en", "es") == ""
    with pytest.raises(ProviderError):
        await translator.translate("Hallo", "de", "en")


# Stand-in pipelines: one answers NUL-terminated blocks for ever; one dies on its first.
ANSWER = "while IFS= read -r -d '' x; do printf '%s\\0' \"$x\"; done"
DIE_ON_FIRST = "IFS= read -r -d '' x; exit 0"


async def test_a_pipeline_that_dies_mid_request_fails_retryably_and_is_replaced(tmp_path):
    died = tmp_path / "died"  # the second process is a working one
    pipeline = ApertiumPipeline(f"if [ -e {died} ]; then {ANSWER}; else touch {died}; {DIE_ON_FIRST}; fi",
                                timeout_s=5)
    with pytest.raises(ProviderError) as failure:
        await pipeline.translate("first")
    assert failure.value.retryable
    assert await pipeline.translate("a [b] ^c$") == "a [b] ^c$"
    await pipeline.stop()


async def test_a_pipeline_that_exited_between_requests_is_restarted():
    pipeline = ApertiumPipeline("IFS= read -r -d '' x; printf '%s\\0' \"$x\"", timeout_s=5)
    assert await pipeline.translate("one") == "one"
    await pipeline.process.wait()  # it answered once and exited
    assert await pipeline.translate("two") == "two"
    await pipeline.stop()


async def test_a_silent_pipeline_times_out_and_is_replaced():
    pipeline = ApertiumPipeline("cat > /dev/null", timeout_s=0.3)
    with pytest.raises(ProviderTimeout):
        await pipeline.translate("anything")
    assert pipeline.process is None
    await pipeline.stop()


# ---------------------------------------------------------------- espeak-ng


@pytest.fixture(scope="module")
def synthesizer():
    return EspeakSynthesizer()


def test_espeak_languages(synthesizer):
    wanted = {"es", "en", "ca", "gl", "eo", "hr", "sr", "bs", "sh", "de", "fr", "it", "pt"}
    assert wanted <= synthesizer.languages


def test_sentences_are_split_for_early_audio():
    assert split_sentences("Hi there. How are you?  Fine!\nBye") == [
        "Hi there.", "How are you?", "Fine!", "Bye",
    ]  # fmt: skip


@pytest.mark.parametrize("language", ["es", "en"])
@pytest.mark.parametrize("rate", [16000, 24000])
async def test_espeak_speaks(synthesizer, language, rate):
    text = {
        "es": "La casa es roja y el cielo es azul.",
        "en": "The house is red and the sky is blue.",
    }
    chunks = [c async for c in synthesizer.synthesize(text[language], language, None, rate)]
    pcm = b"".join(chunks)
    assert all(len(c) <= 0.2 * rate * 2 for c in chunks)
    assert 1.0 < audio.duration_s(pcm, rate) < 4.0
    assert audio.rms(pcm) > 1000


async def test_espeak_output_length_does_not_depend_on_rate(synthesizer):
    text = "Good morning, how are you?"
    low = synthesizer.render(text, "en", None, 16000)
    high = synthesizer.render(text, "en", None, 24000)
    assert audio.duration_s(low, 16000) == pytest.approx(audio.duration_s(high, 24000), rel=0.05)


async def test_espeak_concurrent_requests_do_not_mix(synthesizer):
    async def speak(text, language):
        return b"".join([c async for c in synthesizer.synthesize(text, language, None, 16000)])

    short, long = await asyncio.gather(
        speak("Yes.", "en"), speak("This is a much longer sentence than the other one.", "es")
    )
    assert audio.duration_s(short, 16000) < 1.0 < audio.duration_s(long, 16000)


async def test_espeak_explicit_voice_and_errors(synthesizer):
    pcm = b"".join([c async for c in synthesizer.synthesize("Hello.", "en", "en-us", 16000)])
    assert audio.rms(pcm) > 1000
    with pytest.raises(ProviderError):
        synthesizer.voice_for("xx")
    with pytest.raises(ProviderError):
        [c async for c in synthesizer.synthesize("Hello.", "en", "no-such-voice", 16000)]


# ---------------------------------------------------------------- pocketsphinx


@pytest.fixture(scope="module")
async def recogniser():
    engine = PocketsphinxEngine(pool_size=2)
    await engine.warm_up(2)
    return engine


async def transcribe(engine, pcm: bytes, chunk_s: float = 0.5) -> str:
    session = engine.open("en")
    step = int(engine.sample_rate * chunk_s) * 2
    try:
        for start in range(0, len(pcm), step):
            await session.feed(pcm[start : start + step])
        return await session.finish()
    finally:
        await session.close()


def word_error_rate(reference: str, hypothesis: str) -> float:
    return jiwer.wer(reference, hypothesis) if hypothesis else 1.0


@pytest.mark.parametrize("sentence", RELIABLE_SENTENCES)
async def test_espeak_speech_is_recognised(recogniser, sentence):
    """The project's end-to-end premise: local TTS output is understood by local STT."""
    hypothesis = await transcribe(recogniser, synthesize_speech(sentence))
    assert word_error_rate(sentence, hypothesis) <= 0.35, hypothesis


async def test_partials_grow_and_finish_resets(recogniser):
    session = recogniser.open("en-US")
    pcm = synthesize_speech(RELIABLE_SENTENCES[0])
    partials = [await session.feed(pcm[i : i + 16000]) for i in range(0, len(pcm), 16000)]
    assert any(partials)
    assert await session.finish()
    assert await session.finish() == ""  # no audio since the last utterance
    await session.close()


async def test_sessions_run_concurrently(recogniser):
    first, second = RELIABLE_SENTENCES[:2]
    results = await asyncio.gather(
        transcribe(recogniser, synthesize_speech(first)),
        transcribe(recogniser, synthesize_speech(second)),
    )
    assert word_error_rate(first, results[0]) <= 0.35
    assert word_error_rate(second, results[1]) <= 0.35


async def test_a_session_closed_mid_utterance_leaves_a_clean_decoder(recogniser):
    abandoned = recogniser.open("en")
    await abandoned.feed(synthesize_speech("please open the door")[:16000])
    await abandoned.close()
    sentence = RELIABLE_SENTENCES[0]
    hypothesis = await transcribe(recogniser, synthesize_speech(sentence))
    assert word_error_rate(sentence, hypothesis) <= 0.35
    with pytest.raises(ProviderError):
        await abandoned.feed(bytes(320))


async def test_noise_only_gives_empty_or_short_text(recogniser):
    noise = audio.add_noise_floor(bytes(32000), sigma=30)
    assert len((await transcribe(recogniser, noise)).split()) <= 1


def test_only_english():
    with pytest.raises(ProviderError):
        PocketsphinxEngine().open("es")

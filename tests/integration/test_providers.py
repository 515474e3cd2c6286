"""Cloud provider chains on the real pipeline: real NATS and Redis, vendor fakes that speak
the vendors' wire protocols. STT is the benchmark engine so that utterances are cheap."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from shared.audio import tone
from tests.fakes.assemblyai_server import FakeAssemblyAI
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.unrealspeech_server import FakeUnrealSpeech
from tests.integration.test_services import collect
from tests.support.client import ProtocolClient
from tests.support.metrics import scrape
from tests.support.system import ParleySystem

UTTERANCE = tone(220, 1.0, 16000) + b"\x00\x00" * 8000  # 1 s of "speech", 500 ms of silence


@pytest.fixture
def vendors():
    with FakeOpenAI(api_key="sk-test-key") as openai, FakeUnrealSpeech(api_key="us-test-key") as unreal:
        openai.knobs.set(reply_text="hola")
        yield openai, unreal


@pytest.fixture
def cloud(vendors, nats_server, redis_server, tmp_path, request):
    openai, unreal = vendors
    prefix = f"cloud{abs(hash(request.node.name)) % 10**8}"
    system = ParleySystem(nats_server.url, redis_server.url, "local", tmp_path, env={
        "PARLEY_PREFIX": prefix, "PARLEY_STT_CHAIN": "bench",
        "OPENAI_API_KEY": "sk-test-key", "OPENAI_BASE_URL": openai.url,
        "UNREAL_SPEECH_API_KEY": "us-test-key", "UNREAL_SPEECH_BASE_URL": unreal.url,
        "PARLEY_PROVIDER_TIMEOUT_S": "1", "PARLEY_BREAKER_RESET_S": "1", "PARLEY_PROBE_INTERVAL_S": "0.3",
    })
    system.start_all()
    system.prefix = prefix
    yield system
    codes = system.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    for log in tmp_path.glob("*.log"):  # keys never reach a log line
        text = log.read_text()
        assert "sk-test-key" not in text and "us-test-key" not in text, log.name


async def speak(client: ProtocolClient, n: int) -> None:
    """One utterance through the whole pipeline, waiting for its last audio."""
    await client.stream(UTTERANCE, realtime=False)
    await client.wait_for(lambda e: e.get("type") == "audio.done" and e["utterance_id"].endswith(f"-{n}"), 20)


def paths(server, path: str) -> int:
    return sum(1 for r in server.requests if r.path.endswith(path))


async def worker_metrics(system, kind: str) -> dict[str, float]:
    """A worker's /metrics, found as an operator would: through its $SRV.INFO."""
    nc = await nats.connect(system.nats_url)
    [info] = await collect(nc, f"$SRV.INFO.{system.prefix}-{kind}")
    await nc.close()
    return scrape(info["metadata"]["metrics_url"])


async def breaker_states(system, kind: str) -> dict[str, float]:
    return {name.split('provider="')[1].split('"')[0]: value
            for name, value in (await worker_metrics(system, kind)).items() if name.startswith("parley_breaker_state{")}


async def test_budget_chain_serves_and_meters(cloud, vendors):
    openai, unreal = vendors
    client = await ProtocolClient.connect(cloud.ws_url())
    await client.start(language="en", target_language="es")
    await speak(client, 1)
    assert client.of_type("translation")[0]["text"] == "hola"
    assert paths(unreal, "/stream") == 1 and paths(openai, "/audio/speech") == 0
    request = next(r for r in openai.requests if r.path.endswith("/chat/completions"))
    assert request.json["model"] == "gpt-4.1-nano"
    usage = {(u["capability"], u["provider"]) for u in client.of_type("usage")}
    assert {("translate", "openai"), ("tts", "unrealspeech")} <= usage
    assert all(u["cost_usd"] >= 0 for u in client.of_type("usage"))
    assert any(u["cost_usd"] > 0 for u in client.of_type("usage") if u["capability"] == "translate")
    assert not client.of_type("warning")
    translate, tts = await worker_metrics(cloud, "translate"), await worker_metrics(cloud, "tts")
    assert translate['parley_cost_usd_total{capability="translate",provider="openai"}'] > 0
    assert translate['parley_provider_calls_total{capability="translate",outcome="ok",provider="openai:gpt-4.1-nano"}'] == 1
    assert translate['parley_provider_seconds_count{capability="translate",provider="openai:gpt-4.1-nano"}'] == 1
    assert translate['parley_translation_cache_total{result="miss"}'] == 1
    assert tts['parley_provider_calls_total{capability="tts",outcome="ok",provider="unrealspeech"}'] >= 1
    assert tts['parley_breaker_state{capability="tts",provider="unrealspeech"}'] == 0  # closed
    await client.close()


async def test_budget_tts_fails_openai_serves_then_traffic_returns(cloud, vendors):
    openai, unreal = vendors
    client = await ProtocolClient.connect(cloud.ws_url())
    await client.start(language="en", target_language="es")
    await speak(client, 1)
    unreal.knobs.set(status=500)
    for n in (2, 3, 4):  # three failures in a row open the breaker
        await speak(client, n)
    warning = await client.wait_type("warning", code="provider_fallback")
    assert warning["capability"] == "tts" and "unrealspeech" in warning["message"]
    assert paths(openai, "/audio/speech") >= 3
    assert (await breaker_states(cloud, "tts"))["unrealspeech"] == 2  # open
    tts = await worker_metrics(cloud, "tts")
    assert tts['parley_fallback_total{capability="tts",provider="openai:gpt-4o-mini-tts"}'] >= 3
    assert tts['parley_provider_calls_total{capability="tts",outcome="ok",provider="openai:gpt-4o-mini-tts"}'] >= 3
    assert tts['parley_provider_calls_total{capability="tts",outcome="provider_unavailable",provider="unrealspeech"}'] >= 3
    unreal.knobs.reset()
    await asyncio.sleep(2.0)  # rest period, then a probe takes the provider back
    before = paths(unreal, "/stream")
    await speak(client, 5)
    await client.wait_type("warning", code="provider_recovered")
    assert paths(unreal, "/stream") > before
    for n in range(1, 6):  # nothing lost: every utterance was translated and spoken
        utterance = [e for e in client.durable() if e.get("utterance_id", "").endswith(f"-{n}")]
        assert {"translation", "audio.delta", "audio.done"} <= {e["type"] for e in utterance}, n
    await client.close()


async def test_every_cloud_translator_down_local_engine_serves(cloud, vendors):
    openai, _ = vendors
    openai.knobs.set(status=503)
    client = await ProtocolClient.connect(cloud.ws_url())
    await client.start(language="en", target_language="es")
    await speak(client, 1)
    translation = client.of_type("translation")[0]["text"]
    assert translation and translation != "hola"  # Apertium's rendering of "utterance 1"
    models = {r.json["model"] for r in openai.requests if r.path.endswith("/chat/completions")}
    assert models == {"gpt-4.1-nano", "gpt-4.1-mini"}  # both OpenAI models were tried first
    warning = await client.wait_type("warning", code="provider_fallback")
    assert warning["provider"] == "apertium"
    await client.close()


async def test_hanging_provider_is_cut_at_the_timeout(cloud, vendors):
    openai, _ = vendors
    openai.knobs.set(hang=True)
    client = await ProtocolClient.connect(cloud.ws_url())
    await client.start(language="en", target_language="es")
    await speak(client, 1)  # within 20 s although OpenAI never answers
    assert client.of_type("translation")[0]["text"] != "hola"
    await client.close()


async def test_cache_hit_skips_the_provider(cloud, vendors):
    openai, _ = vendors
    for _ in range(2):  # each new session's first utterance is "utterance 1"
        client = await ProtocolClient.connect(cloud.ws_url())
        await client.start(language="en", target_language="es")
        await speak(client, 1)
        assert client.of_type("translation")[0]["text"] == "hola"
        await client.close()
    assert paths(openai, "/chat/completions") == 1
    metrics = json.dumps(await breaker_states(cloud, "translate"))
    assert "openai:gpt-4.1-nano" in metrics


async def test_streaming_stt_falls_back_to_openai_transcription(vendors, nats_server, redis_server, tmp_path):
    openai, _ = vendors
    with FakeAssemblyAI(api_key="aai-test-key", transcripts=["Good morning."]) as assemblyai:
        system = ParleySystem(nats_server.url, redis_server.url, "local", tmp_path, env={
            "PARLEY_PREFIX": "cloudstt", "PARLEY_TRANSLATE_CHAIN": "bench", "PARLEY_TTS_CHAIN": "bench",
            "PARLEY_STT_CHAIN": "assemblyai,openai:gpt-4o-mini-transcribe,local",
            "ASSEMBLYAI_API_KEY": "aai-test-key", "ASSEMBLYAI_BASE_URL": assemblyai.base_url,
            "OPENAI_API_KEY": "sk-test-key", "OPENAI_BASE_URL": openai.url, "PARLEY_PROVIDER_TIMEOUT_S": "2",
        })
        system.start_all()
        try:
            first = await ProtocolClient.connect(system.ws_url())
            await first.start(language="en", target_language="es")
            await speak(first, 1)
            assert first.of_type("transcript.final")[0]["text"] == "Good morning."
            await first.send({"type": "session.end"})
            await first.wait_type("session.ended")
            await asyncio.to_thread(lambda: assemblyai.sessions[0].wait_ended())
            assert assemblyai.sessions[0].terminated  # an open stream costs money: always closed

            assemblyai.knobs.reject_status = 503
            second = await ProtocolClient.connect(system.ws_url())
            await second.start(language="en", target_language="es")
            await speak(second, 1)
            assert second.of_type("transcript.final")[0]["text"] == "hola"  # OpenAI's transcription
            warning = await second.wait_type("warning", code="provider_fallback")
            assert warning["capability"] == "stt"
            upload = next(r for r in openai.requests if r.path.endswith("/audio/transcriptions"))
            assert upload.form["model"] == "gpt-4o-mini-transcribe"
            await second.close()
        finally:
            codes = system.stop_all()
    assert all(code == 0 for code in codes.values()), codes

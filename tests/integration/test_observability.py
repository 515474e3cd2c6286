"""After one translation and one assistant turn through the whole system, every process's
/metrics shows the counters and histograms of what it did."""

from __future__ import annotations


import json
import time

import nats
import pytest

from shared.audio import tone
from shared.subjects import WORKER_KINDS
from tests.integration.test_services import collect
from tests.support.client import ProtocolClient
from tests.support.metrics import scrape
from tests.support.system import ParleySystem

UTTERANCE = tone(220, 1.0, 16000) + b"\x00\x00" * 8000
PROBE_TOOL = {"name": "utterance_probe", "description": "Answers the utterance",
              "parameters": {"type": "object", "properties": {}}}


@pytest.fixture(scope="module")
def observed(nats_server, tmp_path_factory):
    system = ParleySystem(nats_server.url, None, "bench", tmp_path_factory.mktemp("observed-logs"),
                          env={"PARLEY_PREFIX": "observed"})
    system.start_all()
    yield system
    assert all(code == 0 for code in system.stop_all().values())


async def test_every_process_counts_and_times_what_it_did(observed):
    translating = await ProtocolClient.connect(observed.ws_url())
    await translating.start(language="en", target_language="es")
    await translating.stream(UTTERANCE, realtime=False)
    await translating.wait_type("audio.done")
    assisted = await ProtocolClient.connect(observed.ws_url())
    await assisted.start(mode="assistant", language="en", tools=[PROBE_TOOL])
    await assisted.stream(UTTERANCE, realtime=False)
    call = await assisted.wait_type("tool.call")  # the keyword engine calls a tool it hears named
    await assisted.send({"type": "tool.result", "call_id": call["call_id"], "output": {"ok": True}})
    await assisted.wait_type("response.done")
    await assisted.send({"type": "bogus"})
    await assisted.wait_type("error")

    edge = scrape(observed.url() + "/metrics")
    assert edge["parley_sessions_live"] == 2
    assert edge['parley_events_out_total{type="translation"}'] >= 1
    assert edge['parley_events_out_total{type="response.text"}'] >= 1
    assert edge['parley_client_messages_total{type="AudioAppend"}'] >= 1
    assert edge['parley_client_errors_total{code="invalid_message"}'] >= 1
    assert edge['parley_bus_messages_total{direction="out",family="audio"}'] >= 2
    assert edge['parley_bus_messages_total{direction="in",family="out"}'] >= edge['parley_events_out_total{type="translation"}']

    nc = await nats.connect(observed.nats_url)
    workers = {}
    for kind in WORKER_KINDS:
        [info] = await collect(nc, f"$SRV.INFO.observed-{kind}")
        workers[kind] = scrape(info["metadata"]["metrics_url"])
        [stats] = await collect(nc, f"$SRV.STATS.observed-{kind}")
        assert sum(e["num_requests"] for e in stats["endpoints"]) >= 1
    await nc.close()

    def stage(kind: str, name: str) -> float:
        return workers[kind][f'parley_stage_seconds_count{{stage="{name}"}}']

    assert stage("stt", "chunk_to_transcript") >= 2  # one utterance per session
    assert workers["stt"]['parley_bus_messages_total{direction="in",family="audio"}'] >= 2
    assert workers["stt"]['parley_bus_messages_total{direction="out",family="work.translate"}'] >= 1
    assert workers["stt"]['parley_bus_messages_total{direction="out",family="work.tools"}'] >= 1
    assert stage("translate", "transcript_to_translation") >= 1
    assert workers["translate"]['parley_bus_messages_total{direction="in",family="work.translate"}'] >= 1
    assert 'parley_work_pending{kind="translate"}' in workers["translate"]
    assert stage("tts", "translation_to_first_audio") >= 1 and stage("tts", "tts_first_audio") >= 2
    assert stage("tools", "assistant_turn") >= 1 and stage("tools", "tool_round_trip") >= 1
    assert workers["tools"]['parley_work_done_total{kind="tools"}'] >= 1
    for kind in ("translate", "tts", "tools"):
        assert f'parley_work_pending{{kind="{kind}"}}' in workers[kind]
    await translating.close()
    await assisted.close()


def test_log_lines_are_json_name_their_session_and_carry_no_audio(observed):
    import re

    lines = [json.loads(line) for log in observed.log_dir.glob("*.log") for line in log.read_text().splitlines()
             if line.startswith("{")]
    assert lines and all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    opened = [line for line in lines if line["logger"] == "parley.edge" and "session on generation" in line["msg"]]
    assert len(opened) >= 2 and all(len(line["sid"]) == 32 for line in opened)
    base64_run = re.compile(r"[A-Za-z0-9+/]{200,}")
    assert not [line for line in lines if base64_run.search(json.dumps(line))]


def test_log_level_by_environment_or_flag_and_a_bad_one_refused(nats_server, tmp_path):
    system = ParleySystem(nats_server.url, None, "bench", tmp_path, env={"PARLEY_PREFIX": "loglevel"})
    system.start_worker("translate", "by-default")
    system.start_worker("translate", "by-env", env={"PARLEY_LOG_LEVEL": "warning"})
    system._spawn("by-flag", "worker", "translate", "--log-level", "ERROR", env={"PARLEY_LOG_LEVEL": "DEBUG"})
    bad = system._spawn("bad", "worker", "translate", "--log-level", "LOUD")
    assert bad.wait(timeout=30) == 2
    assert "log level must be one of" in (tmp_path / "bad.log").read_text()
    ready = tmp_path / "by-default.log"
    deadline = time.monotonic() + 30
    while "worker ready" not in ready.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # the others started with it
    assert system.stop_all() == {"by-default": 0, "by-env": 0, "by-flag": 0, "bad": 2}

    def levels(name: str) -> set[str]:
        return {json.loads(line)["level"] for line in (tmp_path / f"{name}.log").read_text().splitlines()
                if line.startswith("{")}

    assert "info" in levels("by-default")
    assert levels("by-env") <= {"warning", "error", "critical"}
    assert levels("by-flag") <= {"error", "critical"}  # the flag wins over the environment

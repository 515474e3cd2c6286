"""A 3-node NATS cluster with R3 streams loses the server that leads the out-stream,
mid-session: clients fail over to the other nodes, a new leader is elected, nothing is
lost or delivered twice."""

from __future__ import annotations

import pytest

from shared.natsd import start_nats_cluster
from tests.chaos.support import (
    Bus,
    assert_clean_exit,
    assert_utterances,
    eventually,
    speak,
    start,
    start_translate,
    transcript,
    utterance,
    wait_done,
)


@pytest.fixture
def cluster(tmp_path):
    nodes = start_nats_cluster(3, name="chaos", log_dir=str(tmp_path))
    yield nodes
    nodes.stop()


async def test_cluster_node_lost_mid_session_loses_nothing(cluster, make_system):
    system = make_system(cluster.url, PARLEY_STREAM_REPLICAS="3", PARLEY_BENCH_TRANSLATE_DELAY_MS="1000")
    bus = await Bus.connect(cluster.url, system.env["PARLEY_PREFIX"])
    try:
        await eventually(lambda: _meta_ready(bus), "the cluster elects a JetStream leader")
        start(system)
        info = await bus.js.stream_info(bus.subjects.out_stream)
        assert info.config.num_replicas == 3 and len(info.cluster.replicas) == 2
        client, started = await start_translate(system)
        ids = [utterance(started, 1, n) for n in (1, 2, 3)]
        await speak(client)
        await wait_done(client, ids[0])
        await speak(client)
        await client.wait_type("transcript.final", utterance_id=ids[1])  # its translation is under way
        leader = (await bus.js.stream_info(bus.subjects.out_stream)).cluster.leader
        next(node for node in cluster.nodes if node.name == leader).kill()
        await wait_done(client, ids[1])
        await speak(client)
        await wait_done(client, ids[2])
        await bus.settle(started["session_id"], client)
        assert_utterances(transcript(client), ids)
        system.check_alive()
        await client.close()
    finally:
        await bus.close()
    assert_clean_exit(system.stop_all())


async def _meta_ready(bus: Bus) -> bool:
    try:
        await bus.js.account_info()
        return True
    except Exception:
        return False

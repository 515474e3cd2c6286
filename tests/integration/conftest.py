"""A Parley system with the benchmark engines: the real edge, bus and workers, instant engines."""

import pytest

from tests.support.system import ParleySystem


@pytest.fixture(scope="session")
def bench_parley(nats_server, tmp_path_factory):
    system = ParleySystem(nats_server.url, None, "bench", tmp_path_factory.mktemp("bench-logs"),
                          env={"PARLEY_PREFIX": "benchsys", "PARLEY_START_TIMEOUT_S": "2"})
    system.start_all()
    yield system
    codes = system.stop_all()
    assert all(code == 0 for code in codes.values()), f"unclean exits: {codes}"

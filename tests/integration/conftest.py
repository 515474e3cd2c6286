"""A Parley system with the benchmark engines: the real edge, bus and workers, instant engines."""

import pytest

from tests.support.secure import secure_env, write_config
from tests.support.system import ParleySystem


@pytest.fixture(scope="session")
def bench_parley(nats_server, tmp_path_factory):
    system = ParleySystem(nats_server.url, None, "bench", tmp_path_factory.mktemp("bench-logs"),
                          env={"PARLEY_PREFIX": "benchsys", "PARLEY_START_TIMEOUT_S": "2"})
    system.start_all()
    yield system
    codes = system.stop_all()
    assert all(code == 0 for code in codes.values()), f"unclean exits: {codes}"


@pytest.fixture(scope="session")
def secure_parley(nats_server, redis_server, tmp_path_factory):
    """Auth and rate limits configured (tests/support/secure.py), state and limits in Redis."""
    logs = tmp_path_factory.mktemp("secure-logs")
    system = ParleySystem(nats_server.url, redis_server.url, "bench", logs,
                          env=secure_env(write_config(logs, global_max_sessions=50)))
    system.start_all()
    yield system
    codes = system.stop_all()
    assert all(code == 0 for code in codes.values()), f"unclean exits: {codes}"

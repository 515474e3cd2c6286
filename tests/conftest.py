"""Shared fixtures: real nats-server and redis-server processes on free ports."""

from __future__ import annotations

import pytest

from shared.natsd import start_nats
from tests.support.servers import start_redis


@pytest.fixture(scope="session")
def nats_server():
    server = start_nats()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server():
    server = start_redis()
    yield server
    server.stop()

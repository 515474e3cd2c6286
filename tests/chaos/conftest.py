"""Chaos fixtures: each test gets systems of its own (its own subject prefix), torn down
even when the test fails; processes killed on purpose are no longer in `processes`."""

from __future__ import annotations

import uuid

import pytest

from tests.chaos.support import chaos_system


@pytest.fixture
def make_system(tmp_path):
    systems = []

    def make(nats_url: str, redis_url: str | None = None, **env: str):
        system = chaos_system(nats_url, tmp_path, f"chaos{uuid.uuid4().hex[:8]}", redis_url, **env)
        systems.append(system)
        return system

    yield make
    for system in systems:
        system.stop_all()

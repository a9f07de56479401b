"""Fixtures for the scale tests: a Redis of the module's own (a fresh key space per test through
a random prefix)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.redis import RedisServer


@pytest.fixture(scope="module")
def redis_server(env: LocalEnvironment) -> Iterator[RedisServer]:
    server = RedisServer(workdir=env.workdir / f"redis-scale-{secrets.token_hex(3)}")
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def prefix() -> str:
    return f"t{secrets.token_hex(4)}"

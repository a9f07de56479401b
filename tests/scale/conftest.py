"""Fixtures for the scale tests: a Redis and a Redis Cluster of the module's own (a fresh key
space per test through a random prefix). Neither needs the Kubernetes environment. The
verifier processes of the tests that do come from tests/verifier's fixture."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pmkeys_dev.redis import RedisServer
from pmkeys_dev.redis_cluster import RedisCluster
from tests.verifier.conftest import verifiers

__all__ = ["verifiers"]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(workdir=Path(tempfile.mkdtemp(prefix="pmkeys-redis-scale-")))
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    """Three masters, three replicas (a real Redis Cluster)."""
    cluster = RedisCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def prefix() -> str:
    return f"t{secrets.token_hex(4)}"

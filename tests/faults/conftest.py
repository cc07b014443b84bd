"""Fault tests' cast: a Redis of their own, and the test database shared with gateway processes."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.db import connection

from routing.config.holder import holder as process_holder
from tests.faults.redis_server import REDIS_SERVER, RedisServer
from tests.faults.redis_topologies import RedisCluster, SentinelSetup, TlsRedis


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A running redis-server of this test's own: kill it, pause it, start it again.

    Tests point this process's cache at it (settings are process-wide), so this process's own
    config refresher, started by an earlier test's gateway, is paused: it would publish into
    the test's Redis behind the test's back."""
    with _own_redis(RedisServer()) as server:
        yield server


@pytest.fixture
def redis_cluster() -> Iterator[RedisCluster]:
    """A three-master Redis Cluster of this test's own (set up as `redis_server`)."""
    with _own_redis(RedisCluster()) as cluster:
        yield cluster


@pytest.fixture
def redis_cluster_with_replicas() -> Iterator[RedisCluster]:
    """Three masters with a replica each, of this test's own (set up as `redis_server`)."""
    with _own_redis(RedisCluster(replicas=1)) as cluster:
        yield cluster


@pytest.fixture
def redis_sentinel() -> Iterator[SentinelSetup]:
    """A master, its replica and a sentinel of this test's own (set up as `redis_server`)."""
    with _own_redis(SentinelSetup()) as setup:
        yield setup


@pytest.fixture
def redis_over_tls() -> Iterator[TlsRedis]:
    """A Redis that speaks only TLS, of this test's own (set up as `redis_server`)."""
    with _own_redis(TlsRedis()) as server:
        yield server


@contextmanager
def _own_redis(redis: Any) -> Iterator[Any]:
    if not os.path.exists(REDIS_SERVER):
        pytest.fail(f"the fault tests need {REDIS_SERVER}: install redis-server (README)")
    was_running = process_holder.running
    process_holder.stop()
    try:
        yield redis.start()
    finally:
        redis.close()
        if was_running:
            process_holder.start()


def shared_database_url(directory: Path) -> str:
    """A DATABASE_URL for gateway processes that reads what this test committed.

    PostgreSQL: the test database itself. SQLite: the test database lives in this process's
    memory, so the processes get a copy, taken now (later writes here are not in it).
    """
    settings = connection.settings_dict
    if connection.vendor == "postgresql":
        host, port = settings["HOST"] or "127.0.0.1", settings["PORT"] or 5432
        user = quote(settings["USER"] or "", safe="")
        password = quote(settings["PASSWORD"] or "", safe="")
        auth = f"{user}:{password}@" if user else ""
        return f"postgres://{auth}{host}:{port}/{settings['NAME']}"
    assert connection.vendor == "sqlite", connection.vendor
    path = directory / "gateways.sqlite3"
    connection.ensure_connection()
    with sqlite3.connect(path) as copy:
        connection.connection.backup(copy)
    copy.close()
    return f"sqlite:///{path}"

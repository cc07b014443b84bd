"""The tests' small cast: a running gateway, real upstreams, and config helpers.

Everything is real: uvicorn servers on 127.0.0.1, Redis (REDIS_URL, set by `dev.py test`), and the
database pytest-django creates (SQLite, or PostgreSQL with DATABASE_URL).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.core.cache import cache

from routing.config.holder import holder
from routing.config.publish import config_publish
from routing.management.echo_upstream import EchoUpstream
from routing.models import Route, Service, Target
from tests.servers import ServerThread, free_port


def pytest_configure(config: pytest.Config) -> None:
    if not settings.REDIS_URL:
        pytest.exit(
            "The tests need a real Redis: run them with `python3 dev.py test`, which finds or "
            "starts one, or set REDIS_URL=redis://127.0.0.1:6379/15.",
            returncode=2,
        )
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        # A file, as the embedded default runs: SQLite's in-memory shared-cache test database
        # fails a write that meets another thread's at once ("table is locked") instead of
        # waiting for it, as a file database does; the gateway writes from several threads.
        database["TEST"]["NAME"] = os.path.join(
            tempfile.gettempdir(), f"portier-test-{os.getpid()}.sqlite3"
        )


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    """Every test starts with nothing counted (django-ratelimit's keys start with rl:): ids and
    names of rolled-back rows come back in later tests."""
    cache.delete_pattern("rl:*")


@pytest.fixture(scope="session")
def gateway(django_db_setup: Any, django_db_blocker: Any) -> Iterator[ServerThread]:
    """The real gateway ASGI app (lean proxy entry + Django), served by uvicorn."""
    from gateway_site.asgi import application

    with django_db_blocker.unblock():
        server = ServerThread(application, lifespan="on").start()
    yield server
    server.stop()
    with django_db_blocker.unblock():
        _end_other_database_sessions()


def _end_other_database_sessions() -> None:
    """The gateway's worker threads keep their connections; end them so the test database can
    be dropped (PostgreSQL refuses to drop a database with sessions)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(scope="session")
def _upstream_servers() -> Iterator[tuple[ServerThread, ServerThread]]:
    # Plain uvicorn: a test that overrides the gateway's header limits must not get them
    # applied again, by the upstream, to the headers the gateway adds.
    servers = (
        ServerThread(EchoUpstream("up-a"), http="httptools").start(),
        ServerThread(EchoUpstream("up-b"), http="httptools").start(),
    )
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def upstream(_upstream_servers: tuple[ServerThread, ServerThread]) -> ServerThread:
    server = _upstream_servers[0]
    server.server.config.app.received.clear()
    server.server.config.app.status_override = None
    return server


@pytest.fixture
def upstream_b(_upstream_servers: tuple[ServerThread, ServerThread]) -> ServerThread:
    server = _upstream_servers[1]
    server.server.config.app.received.clear()
    server.server.config.app.status_override = None
    return server


def received(server: ServerThread) -> list[dict[str, Any]]:
    return server.server.config.app.received


@pytest.fixture
def client(gateway: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        yield http


@pytest.fixture
def dead_url() -> str:
    """A URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


def make_service(name: str, *urls: str, **fields: Any) -> Service:
    service = Service.objects.create(name=name, **fields)
    for url in urls:
        Target.objects.create(service=service, url=url)
    return service


def make_route(service: Service, path: str, **fields: Any) -> Route:
    fields.setdefault("name", f"r{Route.objects.count() + 1}-{service.name}")
    route = Route(service=service, path=path, **fields)
    route.full_clean()
    route.save()
    return route


def publish() -> None:
    """Publish the configuration the test wrote and make the running gateway serve it now."""
    config_publish()
    holder.refresh()

"""The database goes away: proxying goes on, the admin and /auth/ say clearly that the database is
unavailable, and audited routes fail closed, never forwarding a request they could not record.

Two ways in: a gateway process that starts while PostgreSQL refuses connections (its configuration
is in Redis already), and one that loses PostgreSQL while it runs (a TCP hop the test cuts) and
must recover, without a restart, once it comes back.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import redis
from asgiref.sync import async_to_sync
from django.conf import settings

from accounts.models import User
from accounts.services import api_key_issue, api_key_lookup
from routing.config.publish import config_publish
from routing.models import RolePolicy
from tests.conftest import make_route, make_service, received
from tests.routing.proxy.test_identity import bearer, token
from tests.servers import ROOT, ServerThread, free_port, gateway_processes

pytestmark = pytest.mark.django_db(transaction=True)

POSTGRES = ("127.0.0.1", 5432)
# Proxied answers may not wait on the database: none takes longer than this.
QUICK = 2.0
LEAKS = ("Traceback", "SECRET_KEY", "DATABASES", "postgres://", "psycopg", "settings.py")


def timed(http: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    started = time.monotonic()
    response = http.request(method, url, **kwargs)
    elapsed = time.monotonic() - started
    assert elapsed < QUICK, f"{method} {url} took {elapsed:.1f} s"
    return response


def paths_received(upstream: ServerThread) -> list[str]:
    return [seen["path"] for seen in received(upstream)]


def assert_admin_says_database_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["retry-after"] == "5"
    page = response.text
    assert "The database is unavailable" in page
    assert "keeps proxying" in page
    for leak in LEAKS:
        assert leak not in page, f"the page shows {leak!r}"


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


# --- A process started while the database refuses connections ---------------------------------


@pytest.fixture
def cached_configuration(upstream) -> dict[str, str]:
    """Routes published to Redis (public, members-only, audited) and two API keys: one whose
    record is in the cache, one the gateway has never seen."""
    service = make_service("outage", upstream.url)
    members = RolePolicy.objects.create(name="members", kind=RolePolicy.Kind.AUTHENTICATED)
    make_route(service, "/open", name="open")
    make_route(service, "/members", name="members", role_policy=members)
    make_route(service, "/ledger", name="ledger", audit=True)
    config_publish()
    owner = User.objects.create_user("partner", email="partner@example.com", password="x")
    _, cached_key = api_key_issue(owner=owner, name="cached")
    _, unseen_key = api_key_issue(owner=owner, name="unseen")
    assert async_to_sync(api_key_lookup)(cached_key) is not None  # now in the cache
    return {"cached_key": cached_key, "unseen_key": unseen_key}


def test_a_process_started_without_its_database_proxies_and_says_what_it_cannot_do(
    upstream, cached_configuration
):
    refused_database = f"postgres://postgres@127.0.0.1:{free_port()}/portier"
    with (
        gateway_processes(1, DATABASE_URL=refused_database) as [url],
        httpx.Client(base_url=url, timeout=10) as http,
    ):
        public = timed(http, "GET", "/open/a")
        with_token = timed(http, "GET", "/members/a", headers=bearer(token()))
        with_key = [
            timed(
                http, "GET", "/members/b", headers={"X-API-Key": cached_configuration["cached_key"]}
            )
            for _ in range(2)
        ]
        unseen_key = timed(
            http, "GET", "/members/c", headers={"X-API-Key": cached_configuration["unseen_key"]}
        )
        audited = timed(http, "GET", "/ledger/a")
        admin = timed(http, "GET", "/admin/")
        login_page = timed(http, "GET", "/admin/login/")
        login = timed(http, "POST", "/auth/token", json={"username": "partner", "password": "x"})
        health = timed(http, "GET", "/health")
        ready, live = timed(http, "GET", "/health/ready"), timed(http, "GET", "/health/live")

    assert [r.status_code for r in (public, with_token, *with_key)] == [200, 200, 200, 200]
    assert dict(with_key[0].json()["headers"])["x-user-email"] == "partner@example.com"
    assert (unseen_key.status_code, error_code(unseen_key)) == (503, "identity_unavailable")
    assert (audited.status_code, error_code(audited)) == (503, "audit_unavailable")
    assert "/ledger/a" not in paths_received(upstream)
    assert sorted(paths_received(upstream)) == ["/members/a", "/members/b", "/members/b", "/open/a"]
    assert_admin_says_database_unavailable(admin)
    assert_admin_says_database_unavailable(login_page)
    assert (login.status_code, error_code(login)) == (503, "database_unavailable")
    assert login.headers["content-type"] == "application/json"
    assert not any(leak in login.text for leak in LEAKS)
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["checks"]["database"].startswith("error")
    assert health.json()["checks"]["cache"] == "ok"
    # It serves the configuration Redis holds: ready, and alive.
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")
    assert ready.json()["config"]["version"] == health.json()["config"]["version"]
    assert (live.status_code, live.json()) == (200, {"status": "live"})


def test_a_process_with_no_configuration_to_serve_is_alive_but_not_ready(upstream):
    """Neither Redis nor the database answers at start: nothing to route with, so an
    orchestrator must send it no traffic (ready 503), and must not restart it (live 200)."""
    refused_database = f"postgres://postgres@127.0.0.1:{free_port()}/portier"
    refused_redis = f"redis://127.0.0.1:{free_port()}/0"
    with (
        gateway_processes(
            1,
            DATABASE_URL=refused_database,
            REDIS_URL=refused_redis,
            PORTIER_RATELIMIT_REDIS_URL=refused_redis,
        ) as [url],
        httpx.Client(base_url=url, timeout=10) as http,
    ):
        ready = timed(http, "GET", "/health/ready")
        live = timed(http, "GET", "/health/live")
        health = timed(http, "GET", "/health")

    assert (ready.status_code, ready.json()) == (503, {"status": "starting", "config": None})
    assert (live.status_code, live.json()) == (200, {"status": "live"})
    assert health.json()["status"] == "degraded"


# --- A process that loses the database while it runs --------------------------------------------


class Forwarder:
    """A TCP hop to PostgreSQL that the test can cut (connections closed, then refused) and
    restore on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        with self._lock:
            sockets = [s for s in (self._listener, *self._sockets) if s is not None]
            self._listener, self._sockets = None, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the threads blocked on it
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                return
            server.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    client.close()
                    server.close()
                    return
                self._sockets |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def postgres_reachable() -> bool:
    try:
        socket.create_connection(POSTGRES, timeout=0.5).close()
    except OSError:
        return False
    return True


SEED = """
import json, os
import django
django.setup()
from accounts.models import User
from accounts.services import api_key_issue
from routing.models import RolePolicy, Route, Service, Target
service = Service.objects.create(name="outage")
Target.objects.create(service=service, url=os.environ["SEED_UPSTREAM"])
members = RolePolicy.objects.create(name="members", kind="authenticated")
Route.objects.create(name="open", service=service, path="/open")
Route.objects.create(name="members", service=service, path="/members", role_policy=members)
Route.objects.create(name="ledger", service=service, path="/ledger", audit=True)
owner = User.objects.create_user("partner", email="partner@example.com", password="x")
print("SEED " + json.dumps({"key": api_key_issue(owner=owner, name="sync")[1]}))
User.objects.create_superuser("root", "root@example.com", os.environ["SEED_PASSWORD"])
"""


@pytest.fixture
def own_database(upstream) -> Iterator[dict[str, str]]:
    """A throw-away PostgreSQL database, migrated and seeded (routes, an API key, an admin), with
    a cache namespace of its own for the gateway that uses it. Dropped afterwards."""
    if not postgres_reachable():
        pytest.skip("needs PostgreSQL on 127.0.0.1:5432 (the test cuts a TCP hop to it)")
    name = f"portier_outage_{uuid.uuid4().hex[:10]}"
    admin_dsn = f"postgresql://postgres@{POSTGRES[0]}:{POSTGRES[1]}/postgres"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    prefix = f"outage-{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gateway_site.settings",
        "DATABASE_URL": f"postgres://postgres@{POSTGRES[0]}:{POSTGRES[1]}/{name}",
        "REDIS_URL": settings.REDIS_URL,
        "CACHE_KEY_PREFIX": prefix,
        "LOG_LEVEL": "WARNING",
        "SEED_UPSTREAM": upstream.url,
        "SEED_PASSWORD": password,
    }
    try:
        for command in (["manage.py", "migrate", "-v0"], ["-c", SEED]):
            done = subprocess.run(
                [sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr
        [seeded] = [
            json.loads(line[5:]) for line in done.stdout.splitlines() if line.startswith("SEED ")
        ]
        yield {"name": name, "prefix": prefix, "key": seeded["key"], "password": password}
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        store = redis.Redis.from_url(settings.REDIS_URL)
        for cache_key in store.scan_iter(f"{prefix}:*"):
            store.delete(cache_key)


def query(database: str, sql: str) -> Any:
    dsn = f"postgresql://postgres@{POSTGRES[0]}:{POSTGRES[1]}/{database}"
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchone()[0]


def admin_login(http: httpx.Client, password: str) -> None:
    page = http.get("/admin/login/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert csrf is not None, page.text[:500]
    response = http.post(
        "/admin/login/",
        data={
            "username": "root",
            "password": password,
            "csrfmiddlewaretoken": csrf.group(1),
            "next": "/admin/",
        },
    )
    assert response.status_code == 302, response.text[:500]


def wait_for(check: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_a_running_process_rides_out_losing_its_database_and_recovers(upstream, own_database):
    forwarder = Forwarder(POSTGRES)
    forwarder.open()
    through_forwarder = f"postgres://postgres@127.0.0.1:{forwarder.port}/{own_database['name']}"
    key = {"X-API-Key": own_database["key"]}
    try:
        with (
            gateway_processes(
                1, DATABASE_URL=through_forwarder, CACHE_KEY_PREFIX=own_database["prefix"]
            ) as [url],
            httpx.Client(base_url=url, timeout=10) as http,
        ):
            # Before: everything works, and the database records what it should.
            assert http.get("/open/before").status_code == 200
            assert http.get("/members/before", headers=key).status_code == 200
            assert http.get("/ledger/before").status_code == 200
            assert wait_for(
                lambda: (
                    query(own_database["name"], "SELECT count(last_used_at) FROM accounts_apikey")
                    == 1
                )
            ), "the key's last use was never recorded"
            assert query(own_database["name"], "SELECT count(*) FROM audit_auditentry") == 1
            admin_login(http, own_database["password"])
            assert http.get("/admin/").status_code == 200

            forwarder.close()

            # During: proxying goes on (past the key's local TTL, so it comes from Redis again),
            # audited routes and the admin refuse.
            for round_ in range(3):
                assert timed(http, "GET", f"/open/during-{round_}").status_code == 200
                assert (
                    timed(http, "GET", "/members/jwt", headers=bearer(token())).status_code == 200
                )
                assert timed(http, "GET", f"/members/key-{round_}", headers=key).status_code == 200
                audited = timed(http, "GET", f"/ledger/during-{round_}")
                assert (audited.status_code, error_code(audited)) == (503, "audit_unavailable")
                time.sleep(0.6)
            assert not [p for p in paths_received(upstream) if p.startswith("/ledger/during")]
            assert_admin_says_database_unavailable(timed(http, "GET", "/admin/"))
            health = timed(http, "GET", "/health").json()
            assert (health["status"], health["checks"]["database"][:5]) == ("degraded", "error")

            forwarder.open()

            # After: the same process records and administers again.
            assert wait_for(lambda: http.get("/ledger/after").status_code == 200)
            assert wait_for(lambda: http.get("/admin/").status_code == 200)
            assert "Site administration" in http.get("/admin/").text
            assert http.get("/health").json()["checks"]["database"] == "ok"
            assert query(own_database["name"], "SELECT count(*) FROM audit_auditentry") >= 2
    finally:
        forwarder.close()


# --- A database that accepts connections and never answers ---------------------------------------


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A port whose listener takes connections into its backlog and never says a word, as a
    hung database host does: clients wait for their own timeouts."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def test_health_answers_in_time_while_the_database_hangs(upstream, cached_configuration):
    with (
        black_hole() as port,
        gateway_processes(1, DATABASE_URL=f"postgres://postgres@127.0.0.1:{port}/portier") as [url],
        httpx.Client(base_url=url, timeout=10) as http,
    ):
        probes: list[tuple[float, httpx.Response]] = []

        def probe() -> None:
            started = time.perf_counter()
            response = http.get("/health")
            probes.append((time.perf_counter() - started, response))

        # Five load-balancer probes at once: each database check would wait for the 3 s connect
        # timeout, and all of them for one another on Django's one sync thread.
        threads = [threading.Thread(target=probe) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        served = http.get("/open/a")

    assert len(probes) == 5
    assert max(seconds for seconds, _ in probes) < 2.0
    for _, response in probes:
        assert response.status_code == 200
        assert response.json()["status"] == "degraded"
        assert response.json()["checks"]["database"].startswith("error")
        assert response.json()["checks"]["cache"] == "ok"
    assert served.status_code == 200

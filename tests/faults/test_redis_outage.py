"""Redis dies, hangs and comes back empty under steady traffic, and the gateways ride it out.

Each test runs its own redis-server (tests/faults/redis_server.py) and gateway processes pointed
at it, sharing a copy of the test database (as production processes share theirs), so one of
them can publish the configuration again when Redis comes back without it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import jwt
import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import Client, override_settings
from django.utils import timezone

from accounts.models import ApiKey, User
from accounts.services import api_key_issue
from routing.config.build import snapshot_build
from routing.config.compiler import snapshot_compile
from routing.config.publish import VERSION_KEY, config_publish
from routing.config.spec import ServiceSpec
from routing.models import ConfigVersion, RateLimitTier
from routing.upstream import health as health_state
from routing.upstream import monitor as health_monitor
from routing.upstream import registry
from tests.conftest import make_route, make_service, publish
from tests.faults.conftest import shared_database_url
from tests.faults.redis_server import RedisServer
from tests.servers import ServerThread, gateway_processes

pytestmark = pytest.mark.django_db(transaction=True)

# No request may wait on Redis beyond its socket timeouts (0.5 s for the cache, 0.25 s for the
# rate limiter): every one must be answered well within this.
TIMEOUT = 2.0


@contextmanager
def cache_at(url: str) -> Iterator[None]:
    """This test process's cache pointed at the test's own Redis, under the same key prefix."""
    with override_settings(CACHES={"default": {**settings.CACHES["default"], "LOCATION": url}}):
        yield


@dataclass(frozen=True, slots=True)
class Hit:
    phase: str
    url: str
    path: str
    status: int  # 0: no answer (timeout, connection error)
    seconds: float
    counted: bool  # rate-limit headers on the answer
    finished: float = 0.0  # time.perf_counter() when the answer came


class Traffic:
    """One client sending requests in turn to each gateway and path, from a thread, until stopped
    (or `limit` seconds): every request bounded by TIMEOUT, every answer recorded."""

    def __init__(self, urls: list[str], paths: list[str], limit: float = 30.0) -> None:
        self.urls, self.paths, self.limit = urls, paths, limit
        self.phase = "up"
        self.hits: list[Hit] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=TIMEOUT + 5)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        with httpx.Client(timeout=TIMEOUT) as http:
            while not self._stop.is_set() and time.monotonic() < deadline:
                for url in self.urls:
                    for path in list(self.paths):
                        self.hits.append(self._send(http, url, path))
                time.sleep(0.005)

    def _send(self, http: httpx.Client, url: str, path: str) -> Hit:
        phase = self.phase
        started = time.perf_counter()
        try:
            response = http.get(url + path)
        except httpx.HTTPError:
            ended = time.perf_counter()
            return Hit(phase, url, path, 0, ended - started, False, ended)
        counted = "ratelimit-limit" in response.headers
        ended = time.perf_counter()
        return Hit(phase, url, path, response.status_code, ended - started, counted, ended)

    def of(self, phase: str, path: str | None = None) -> list[Hit]:
        return [h for h in self.hits if h.phase == phase and path in (None, h.path)]


def health(http: httpx.Client, url: str) -> tuple[int, dict[str, Any]]:
    response = http.get(url + "/health")
    return response.status_code, response.json()


def target_state(http: httpx.Client, url: str, service: str, target: str) -> str | None:
    report = http.get(url + "/health/services").json()
    for entry in report["services"]:
        for row in entry["targets"] if entry["name"] == service else ():
            if row["url"] == target:
                return str(row["state"])
    return None


def wait_for(condition: Any, seconds: float, what: str) -> float:
    """Seconds until `condition()` holds; fails the test after `seconds`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"gave up waiting for {what}"
        time.sleep(0.02)
    return time.monotonic() - started


def database_version(database_url: str) -> int:
    """The configuration version in the gateways' database."""
    if database_url.startswith("sqlite:///"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as db:
            row = db.execute("SELECT number FROM routing_configversion WHERE id = 1").fetchone()
        return int(row[0])
    return ConfigVersion.objects.get(pk=1).number


def published_version(token: str) -> int:
    return int(token.split("-")[0])


def test_gateways_serve_through_a_redis_outage_and_recover_when_it_comes_back_empty(
    redis_server: RedisServer,
    upstream: ServerThread,
    upstream_b: ServerThread,
    dead_url: str,
    tmp_path: Path,
) -> None:
    # A dead target that active checks keep out of the pool (no retries, no breaker: picking it
    # would fail the request), a rate-limited route, and a service of registered instances only.
    steady = make_service(
        "steady",
        upstream.url,
        dead_url,
        health_path="/",
        health_interval=0.2,
        unhealthy_threshold=3,
        breaker_failures=0,
        retries=0,
    )
    tier = RateLimitTier.objects.create(name="generous", rate="100000/m", key="route")
    make_route(steady, "/plain", name="plain")
    make_route(steady, "/limited", name="limited", rate_limit_tier=tier)
    make_route(make_service("elastic", allow_registration=True), "/registered", name="registered")
    with cache_at(redis_server.url):
        registry.instance_register(service="elastic", url=upstream_b.url, ttl=60)
        token = config_publish()
    version = published_version(token)
    database_url = shared_database_url(tmp_path)
    env = {
        "REDIS_URL": redis_server.url,
        "PORTIER_RATELIMIT_REDIS_URL": redis_server.url,
        "DATABASE_URL": database_url,
        "PORTIER_HEALTH_SYNC_INTERVAL": "0.2",
        # A killed Redis refuses at once, so this timeout never applies in the outage; on a busy
        # machine (a full CI run) even 1 s expired while Redis was up and skipped a count the
        # test expects (the hung-Redis test below keeps the default).
        "PORTIER_RATELIMIT_REDIS_TIMEOUT": "5",
    }

    with (
        gateway_processes(2, fast_poll=False, **env) as urls,
        gateway_processes(1, fast_poll=False, PORTIER_RATELIMIT_FAIL="closed", **env) as [closed],
        httpx.Client(timeout=TIMEOUT) as http,
    ):
        everyone = [*urls, closed]
        wait_for(
            lambda: all(
                health(http, url)[1]["config"]["token"] == token
                and target_state(http, url, "steady", dead_url) == "unhealthy"
                for url in everyone
            ),
            10,
            "every process to load the configuration and find the dead target",
        )
        assert http.get(closed + "/limited").headers["ratelimit-limit"] == "100000"

        with Traffic(urls, ["/plain", "/limited", "/registered"]) as traffic:
            time.sleep(0.5)

            traffic.phase = "down"
            killed = time.perf_counter()
            redis_server.kill()
            time.sleep(0.5)
            for url in everyone:
                status, body = health(http, url)
                assert status == 200
                assert body["status"] == "degraded"
                assert body["checks"]["cache"].startswith("error")
            refused = http.get(closed + "/limited")
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "rate_limit_unavailable"
            assert http.get(closed + "/plain").status_code == 200
            time.sleep(1.0)

            traffic.phase = "back"
            redis_server.start()  # same port, empty: no configuration, counts or health state
            restarted = time.monotonic()

            def recovered() -> bool:
                for url in everyone:
                    body = health(http, url)[1]
                    if body["status"] != "ok" or body["config"]["version"] != version + 1:
                        return False
                return all("ratelimit-limit" in http.get(u + "/limited").headers for u in urls)

            wait_for(recovered, 10, "the gateways to recover")
            recovery = time.monotonic() - restarted
            traffic.phase = "recovered"
            time.sleep(0.5)

        tokens = {health(http, url)[1]["config"]["token"] for url in everyone}
        with cache_at(redis_server.url):
            assert tokens == {cache.get(VERSION_KEY)}

    assert database_version(database_url) == version + 1  # published again by one process only
    failed = [h for h in traffic.hits if h.status != 200]
    slowest = max(h.seconds for h in traffic.hits)
    down = traffic.of("down")
    print(
        f"\n{len(traffic.hits)} requests ({len(down)} with Redis down), "
        f"{len(failed)} failed; slowest {slowest * 1000:.0f} ms "
        f"(Redis down: {max(h.seconds for h in down) * 1000:.0f} ms); "
        f"recovered {recovery:.2f} s after the restart"
    )
    assert not failed, failed[:5]
    assert slowest < TIMEOUT
    # A request sent just before the kill may meet Redis gone: only those answered before it.
    assert all(h.counted for h in traffic.of("up", "/limited") if h.finished < killed)
    assert not any(h.counted for h in traffic.of("down", "/limited")[5:])  # served uncounted
    assert all(h.counted for h in traffic.of("recovered", "/limited"))
    assert traffic.of("down", "/registered")  # the registered instance went on serving
    assert traffic.of("recovered", "/registered")


def test_a_hung_redis_delays_no_request_beyond_its_timeouts(
    redis_server: RedisServer, upstream: ServerThread, tmp_path: Path
) -> None:
    service = make_service("steady", upstream.url)
    tier = RateLimitTier.objects.create(name="generous", rate="100000/m", key="route")
    make_route(service, "/plain", name="plain")
    make_route(service, "/limited", name="limited", rate_limit_tier=tier)
    with cache_at(redis_server.url):
        token = config_publish()
    env = {
        "REDIS_URL": redis_server.url,
        "PORTIER_RATELIMIT_REDIS_URL": redis_server.url,
        "DATABASE_URL": shared_database_url(tmp_path),
    }

    with (
        gateway_processes(1, fast_poll=False, **env) as [url],
        httpx.Client(timeout=TIMEOUT) as http,
    ):
        wait_for(lambda: health(http, url)[1]["config"]["token"] == token, 10, "the configuration")
        with Traffic([url], ["/plain", "/limited"]) as traffic:
            time.sleep(0.3)
            traffic.phase = "down"
            redis_server.pause()  # accepts connections, answers nothing
            try:
                time.sleep(0.5)
                started = time.perf_counter()
                status, body = health(http, url)
                health_seconds = time.perf_counter() - started
                time.sleep(1.0)
            finally:
                redis_server.resume()
            traffic.phase = "back"
            wait_for(
                lambda: "ratelimit-limit" in http.get(url + "/limited").headers,
                5,
                "counting to resume",
            )
            traffic.phase = "recovered"
            time.sleep(0.3)

    down = traffic.of("down")
    slowest = max(h.seconds for h in traffic.hits)
    print(
        f"\nRedis hung: {len(down)} requests, slowest {max(h.seconds for h in down) * 1000:.0f}"
        f" ms; /health took {health_seconds * 1000:.0f} ms"
    )
    assert status == 200
    assert body["status"] == "degraded"
    assert all(h.status == 200 for h in traffic.hits)
    assert slowest < TIMEOUT
    assert health_seconds < TIMEOUT
    assert all(h.counted for h in traffic.of("recovered", "/limited"))


@pytest.fixture
def board_of_its_own(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's health state, fresh for the test and restored after it; the monitor thread
    (started by an earlier test's gateway) is paused so that it does not rebuild it meanwhile."""
    was_running = health_monitor.monitor.running
    health_monitor.monitor.stop()
    monkeypatch.setattr(health_state, "board", health_state.Board())
    monkeypatch.setattr(health_monitor, "_instance_expiry", {})
    monkeypatch.setattr(health_state, "_trials_wanted", set())
    monkeypatch.setattr(health_state, "_trials_granted", set())
    yield
    if was_running:
        health_monitor.monitor.start()


def compiled_service(name: str) -> ServiceSpec:
    return snapshot_compile(snapshot_build(1, "t")).services[name]


def test_the_board_keeps_what_a_redis_restarted_empty_lost(
    redis_server: RedisServer, board_of_its_own: None, upstream_b: ServerThread, dead_url: str
) -> None:
    make_service(
        "kept", "http://127.0.0.1:9001", dead_url, health_path="/", allow_registration=True
    )
    service = compiled_service("kept")
    open_target, dead = service.targets

    def sync() -> None:
        instances, lost = registry.instances_and_lost_indexes([service.name])
        health_monitor._sync_board([service], instances, lost)

    with cache_at(redis_server.url):
        registry.instance_register(service="kept", url=upstream_b.url, ttl=60)
        state = {"up": False, "ok": 0, "fail": 3, "checked_at": time.time()}
        cache.set(health_monitor.ACTIVE_KEY.format(dead.sid), state, 60)
        cache.set(health_monitor.CIRCUIT_KEY.format(open_target.sid), time.time() + 30, 60)
        sync()
        before = health_state.board
        redis_server.kill()
        redis_server.start()  # empty
        sync()
    after = health_state.board

    assert before.down == {dead.sid, open_target.sid}
    assert [t.url for t in before.instances["kept"]] == [upstream_b.url]
    assert after.down == before.down
    assert after.circuits == before.circuits
    assert after.active == before.active
    assert after.instances == before.instances


def test_a_half_open_circuit_gets_its_trial_while_redis_is_down(
    board_of_its_own: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_service("tried", "http://127.0.0.1:9001", health_path="/")
    service = compiled_service("tried")
    [target] = service.targets
    snapshot = SimpleNamespace(services={"tried": service})
    monkeypatch.setattr(health_monitor, "holder", SimpleNamespace(current=snapshot))
    health_state._trials_wanted.add(target.sid)  # a request found its circuit half-open
    dead_cache = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        }
    }

    with override_settings(CACHES=dead_cache):
        health_monitor.Monitor().tick()

    assert health_state._trials_granted == {target.sid}  # decided here, without the cache


def register_as_registrar(service: str, instance: str) -> Any:
    """PUT an instance into the registry, as a registrar whose signed token needs neither the
    database nor the cache to be believed."""
    registrar = jwt.encode(
        {
            "user_id": 41,
            "roles": [settings.PORTIER_REGISTRAR_ROLE],
            "token_type": "access",
            "exp": int(time.time()) + 300,
        },
        settings.PORTIER_JWT_SIGNING_KEY,
        algorithm="HS256",
    )
    return Client().put(
        f"/registry/services/{service}/instances/{instance}",
        {"url": "http://127.0.0.1:10"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {registrar}",
    )


def test_the_registry_answers_503_while_redis_is_down(redis_server: RedisServer) -> None:
    def register() -> Any:
        return register_as_registrar("enrolling", "e-1")

    with cache_at(redis_server.url):
        make_service("enrolling", "http://127.0.0.1:9", allow_registration=True)
        publish()
        registered = register()
        redis_server.kill()
        refused = register()

    assert registered.status_code == 201
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "registry_unavailable"


@pytest.mark.parametrize(("policy", "status"), [("open", 200), ("closed", 503)])
def test_sign_in_follows_the_fail_policy_while_redis_is_down(
    redis_server: RedisServer, policy: str, status: int
) -> None:
    User.objects.create_user("ana", email="ana@example.com", password="s3cret-enough")
    with cache_at(redis_server.url), override_settings(PORTIER_RATELIMIT_FAIL=policy):
        redis_server.kill()
        response = Client().post(
            "/auth/token",
            {"username": "ana", "password": "s3cret-enough"},
            content_type="application/json",
        )

    assert response.status_code == status  # failed logins cannot be counted: never a 500
    if status == 200:
        assert "access" in response.json()
    else:
        assert response.json()["error"]["code"] == "rate_limit_unavailable"


def test_an_api_key_revoked_while_redis_is_down_is_saved(redis_server: RedisServer) -> None:
    owner = User.objects.create_user("sync", email="sync@example.com", password="x")
    api_key_issue(owner=owner, name="sync")
    key = ApiKey.objects.get(owner=owner)
    with cache_at(redis_server.url):
        redis_server.kill()
        key.revoked_at = timezone.now()
        key.save()  # its cache entry cannot be forgotten: logged, and the save stands

    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None

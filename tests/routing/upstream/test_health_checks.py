"""Active health checks, /health/services, and gateway processes agreeing on health, end to end.

Every test runs its own upstream servers (started, killed and brought back on the same port) and
its own services, so the health state of one test, which lives in Redis and is keyed by service
and URL, never shows up in another. The machine may be busy: waits poll against deadlines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from routing.config.holder import holder
from routing.management.echo_upstream import EchoUpstream
from tests.conftest import make_route, make_service, publish
from tests.servers import ServerThread, gateway_processes

pytestmark = pytest.mark.django_db(transaction=True)

SYNC_INTERVAL = 0.1  # every gateway process's PORTIER_HEALTH_SYNC_INTERVAL here
SLACK = 3.0  # seconds a wait may run past its due time (expected: under one); the box is shared
FAST_CHECKS: dict[str, Any] = {
    "health_interval": 0.3,
    "health_timeout": 0.2,
    "healthy_threshold": 2,
    "unhealthy_threshold": 2,
    # Only active checks may take a target out, and a request sent to a dead target fails
    # instead of being retried elsewhere: a failed request shows the target was still used.
    "breaker_failures": 0,
    "retries": 0,
    "balancing": "round_robin",
}


@pytest.fixture(autouse=True)
def _quick_health_sync(settings) -> None:
    settings.PORTIER_HEALTH_SYNC_INTERVAL = SYNC_INTERVAL


class Upstream:
    """An echo upstream the test may kill and bring back on the same port."""

    def __init__(self, name: str) -> None:
        self.app = EchoUpstream(name)
        self.server: ServerThread | None = ServerThread(self.app).start()
        self.port = self.server.port
        self.url = self.server.url

    def kill(self) -> None:
        assert self.server is not None
        self.server.stop()
        self.server = None

    def revive(self) -> None:
        assert self.server is None
        self.server = ServerThread(self.app, port=self.port).start()

    def stop(self) -> None:
        if self.server is not None:
            self.kill()

    def probes(self, path: str) -> int:
        return sum(1 for r in self.app.received if r["path"] == path)


@pytest.fixture
def start_upstream() -> Iterator[Callable[[str], Upstream]]:
    started: list[Upstream] = []

    def start(name: str) -> Upstream:
        started.append(Upstream(name))
        return started[-1]

    yield start
    for upstream in started:
        upstream.stop()


@pytest.fixture(scope="module")
def two_gateways(django_db_setup: Any) -> Iterator[list[str]]:
    """Two more gateway processes sharing this test run's Redis (and nothing else)."""
    with gateway_processes(PORTIER_HEALTH_SYNC_INTERVAL=str(SYNC_INTERVAL)) as urls:
        yield urls


def wait_for(condition: Callable[[], Any], seconds: float, what: str) -> Any:
    """Poll until the condition holds (returns something truthy); fail after the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"gave up after {seconds:.1f}s waiting for {what}"
        time.sleep(0.05)


def report(base: httpx.Client | str) -> httpx.Response:
    if isinstance(base, str):
        return httpx.get(base + "/health/services", timeout=5)
    return base.get("/health/services")


def target_state(base: httpx.Client | str, service: str, url: str) -> dict[str, Any]:
    services = {s["name"]: s for s in report(base).json()["services"]}
    return next(t for t in services[service]["targets"] if t["url"] == url)


def in_state(base: httpx.Client | str, service: str, url: str, state: str) -> bool:
    return target_state(base, service, url)["state"] == state


def serving_current_config(url: str) -> bool:
    return httpx.get(url + "/health", timeout=2).json()["config"]["token"] == holder.current.token


def answered_by(answers: list[httpx.Response]) -> list[str | None]:
    return [a.headers.get("x-upstream") for a in answers]


def test_it_takes_a_dead_target_out_and_brings_it_back_after_good_probes(client, start_upstream):
    a, b = start_upstream("hc-a"), start_upstream("hc-b")
    make_route(make_service("failover", a.url, b.url, health_path="/hz", **FAST_CHECKS), "/fo")
    publish()
    wait_for(
        lambda: (
            in_state(client, "failover", a.url, "healthy")
            and in_state(client, "failover", b.url, "healthy")
        ),
        SLACK,
        "the first probes",
    )

    a.kill()
    # Out after two failed probes one interval apart (each within the probe timeout), once the
    # next board sync has read them.
    out_within = 0.3 * 2 + 0.2 + SYNC_INTERVAL
    wait_for(
        lambda: in_state(client, "failover", a.url, "unhealthy"), out_within + SLACK, "a to be out"
    )

    answers = [client.get("/fo") for _ in range(20)]
    assert [r.status_code for r in answers] == [200] * 20
    assert set(answered_by(answers)) == {"hc-b"}

    a.app.received.clear()
    a.revive()
    first = wait_for(
        lambda: (r := client.get("/fo")).headers.get("x-upstream") == "hc-a" and r,
        SLACK,
        "requests to reach a again",
    )
    assert first.status_code == 200
    # The revived target got nothing but probes until two of them had succeeded.
    seen = [r["path"] for r in a.app.received]
    assert seen.index("/fo") >= 2
    assert set(seen[: seen.index("/fo")]) == {"/hz"}
    assert in_state(client, "failover", a.url, "healthy")
    answers = [client.get("/fo") for _ in range(10)]
    assert [r.status_code for r in answers] == [200] * 10
    assert set(answered_by(answers)) == {"hc-a", "hc-b"}


def test_it_marks_a_target_answering_503_on_its_health_path_unhealthy(client, start_upstream):
    sick = start_upstream("hc-sick")
    make_route(make_service("sick", sick.url, health_path="/hz", **FAST_CHECKS), "/sick")
    publish()
    wait_for(lambda: in_state(client, "sick", sick.url, "healthy"), SLACK, "the first probe")

    sick.app.status_override = 503
    wait_for(lambda: in_state(client, "sick", sick.url, "unhealthy"), SLACK, "the 503s to count")

    target = target_state(client, "sick", sick.url)
    assert target["error"] == "status 503"
    assert target["available"] is False
    assert target["circuit"] == "closed"
    assert isinstance(target["latency_ms"], int | float) and target["latency_ms"] >= 0
    checked = datetime.fromisoformat(target["last_check"])
    assert abs((datetime.now(UTC) - checked).total_seconds()) < 30
    # With its only target out, the service turns callers away instead of sending them there.
    sick.app.received.clear()
    refused = client.get("/sick")
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "upstream_unavailable"
    assert all(r["path"] == "/hz" for r in sick.app.received)


def test_it_reports_503_while_a_services_only_target_is_down(client, start_upstream):
    only = start_upstream("hc-only")
    make_route(make_service("solo", only.url, health_path="/hz", **FAST_CHECKS), "/solo")
    publish()
    wait_for(lambda: in_state(client, "solo", only.url, "healthy"), SLACK, "the first probe")

    up = report(client)
    assert up.status_code == 200
    assert up.headers["content-type"] == "application/json"
    body = up.json()
    assert body["status"] == "ok"
    [service] = body["services"]
    assert service["name"] == "solo"
    assert service["status"] == "healthy"
    [target] = service["targets"]
    assert target["url"] == only.url
    assert target["state"] == "healthy"
    assert target["circuit"] == "closed"
    assert target["available"] is True
    assert target["last_check"] is not None
    assert target["latency_ms"] is not None
    assert target["error"] is None

    only.kill()
    down = wait_for(
        lambda: (r := report(client)).status_code == 503 and r, SLACK, "the report to say 503"
    )
    body = down.json()
    assert body["status"] == "unavailable"
    [service] = body["services"]
    assert service["status"] == "unavailable"
    [target] = service["targets"]
    assert (target["state"], target["available"]) == ("unhealthy", False)
    assert target["error"]  # the refused connection, or the dropped one while it shut down

    only.revive()
    back = wait_for(
        lambda: (r := report(client)).status_code == 200 and r, SLACK, "the report to say 200"
    )
    assert back.json()["status"] == "ok"
    assert back.json()["services"][0]["targets"][0]["state"] == "healthy"


def test_it_stays_200_while_a_service_has_one_of_two_targets_down(client, start_upstream, dead_url):
    live = start_upstream("hc-live")
    make_route(
        make_service("halved", live.url, dead_url, health_path="/hz", **FAST_CHECKS), "/halved"
    )
    publish()

    wait_for(lambda: in_state(client, "halved", dead_url, "unhealthy"), SLACK, "dead to be out")

    response = report(client)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    [service] = body["services"]
    assert service["status"] == "degraded"
    available = {t["url"]: t["available"] for t in service["targets"]}
    assert available == {live.url: True, dead_url: False}


def test_it_shows_the_services_report_only_to_operators(client, settings):
    publish()  # no services: the report is 200 whatever earlier tests left unhealthy
    settings.PORTIER_OPS_NETWORKS = ["192.0.2.0/24"]  # excludes this test's 127.0.0.1

    refused = client.get("/health/services")
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/json"
    assert refused.json()["error"]["code"] == "forbidden"
    # A caller cannot claim an operator's address: no proxy is trusted.
    spoofed = client.get("/health/services", headers={"X-Forwarded-For": "192.0.2.7"})
    assert spoofed.status_code == 403

    settings.PORTIER_OPS_TOKEN = "ops-secret-token"
    assert client.get("/health/services").status_code == 403
    wrong = client.get("/health/services", headers={"Authorization": "Bearer guess"})
    assert wrong.status_code == 403
    allowed = client.get("/health/services", headers={"Authorization": "Bearer ops-secret-token"})
    assert allowed.status_code == 200
    assert "services" in allowed.json()


def test_it_probes_a_target_about_once_per_interval_across_gateways(
    two_gateways, client, start_upstream
):
    shared = start_upstream("hc-shared")
    interval = 0.5
    make_route(
        make_service(
            "shared",
            shared.url,
            health_path="/hz",
            health_interval=interval,
            health_timeout=0.3,
            breaker_failures=0,
        ),
        "/shared",
    )
    publish()
    wait_for(
        lambda: all(serving_current_config(url) for url in two_gateways),
        SLACK,
        "the processes to load the configuration",
    )
    # All three processes now monitor the target: count its probes over a few seconds.
    wait_for(lambda: shared.probes("/hz"), SLACK, "the first probe")
    shared.app.received.clear()
    started = time.monotonic()
    time.sleep(3)
    probes = shared.probes("/hz")
    elapsed = time.monotonic() - started

    expected = elapsed / interval
    # Three independent checkers would send about 3 * expected.
    assert probes <= 1.5 * expected + 2
    assert probes >= 2  # and checks did go on
    for url in two_gateways:
        assert in_state(url, "shared", shared.url, "healthy")


def test_it_makes_gateway_processes_agree_on_a_targets_health(two_gateways, start_upstream):
    a, b = start_upstream("hc-agree-a"), start_upstream("hc-agree-b")
    make_route(make_service("agreed", a.url, b.url, health_path="/hz", **FAST_CHECKS), "/agreed")
    publish()
    wait_for(
        lambda: all(serving_current_config(url) for url in two_gateways),
        SLACK,
        "the processes to load the configuration",
    )
    wait_for(
        lambda: all(in_state(url, "agreed", a.url, "healthy") for url in two_gateways),
        SLACK,
        "both processes to see a healthy",
    )

    a.kill()
    wait_for(
        lambda: all(in_state(url, "agreed", a.url, "unhealthy") for url in two_gateways),
        SLACK,
        "both processes to see a unhealthy",
    )
    for url in two_gateways:
        answers = [httpx.get(url + "/agreed", timeout=10) for _ in range(10)]
        # Without retries, a request sent to the dead target would fail with 502.
        assert [r.status_code for r in answers] == [200] * 10
        assert set(answered_by(answers)) == {"hc-agree-b"}

    a.revive()
    wait_for(
        lambda: all(in_state(url, "agreed", a.url, "healthy") for url in two_gateways),
        SLACK,
        "both processes to see a healthy again",
    )
    for url in two_gateways:
        answers = [httpx.get(url + "/agreed", timeout=10) for _ in range(10)]
        assert [r.status_code for r in answers] == [200] * 10
        assert set(answered_by(answers)) == {"hc-agree-a", "hc-agree-b"}


def test_it_reports_and_uses_a_target_without_active_checks_as_unchecked(client, start_upstream):
    plain = start_upstream("hc-plain")
    make_route(make_service("plain", plain.url), "/plain")
    publish()

    target = target_state(client, "plain", plain.url)
    assert target["state"] == "unchecked"
    assert target["available"] is True
    assert target["last_check"] is None
    assert target["latency_ms"] is None
    assert report(client).status_code == 200

    answers = [client.get("/plain") for _ in range(3)]
    assert [r.status_code for r in answers] == [200] * 3
    assert set(answered_by(answers)) == {"hc-plain"}
    assert [r["path"] for r in plain.app.received] == ["/plain"] * 3

"""Prometheus metrics at /metrics, end to end: what moves after known traffic, bounded labels,
operator-only access, target health, and worker processes summed through a shared directory.

The in-process gateway's registry lives as long as the test run, and route names come back in
later tests: assertions compare the exposition before and after the test's own traffic. A request
is counted just after its answer is sent, so reads poll briefly until the counts arrive.
"""

from __future__ import annotations

import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from routing.config.holder import holder
from routing.models import RateLimitTier, RolePolicy
from tests.conftest import make_route, make_service, publish
from tests.servers import gateway_processes

pytestmark = pytest.mark.django_db(transaction=True)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(http: httpx.Client | str, **headers: str) -> Samples:
    """Every sample of the exposition, keyed by name and labels."""
    if isinstance(http, str):
        answer = httpx.get(http + "/metrics", headers=headers, timeout=10)
    else:
        answer = http.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def settled(read: Callable[[], Samples], done: Callable[[Samples], bool]) -> Samples:
    """Read until `done` holds (or 5 s passed): the last request may still be being counted."""
    deadline = time.monotonic() + 5
    while True:
        samples = read()
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def requests(samples: Samples, route: str, service: str, method: str, status: str) -> float:
    return value(
        samples,
        "portier_requests_total",
        route=route,
        service=service,
        method=method,
        status_class=status,
    )


def test_it_counts_requests_by_route_and_status_class(client, upstream):
    route = make_route(make_service("met-svc", upstream.url), "/met", strip_prefix=True)
    publish()
    before = scrape(client)

    for _ in range(3):
        assert client.get("/met/ok").status_code == 200
    assert client.get("/met/_status/404").status_code == 404
    assert client.post("/met/ok", content=b"12345").status_code == 200
    assert client.get("/nothing-routes-here").status_code == 404

    def moved(samples: Samples) -> bool:
        return (
            value(
                samples,
                "portier_request_duration_seconds_count",
                route=route.name,
                service="met-svc",
            )
            - value(
                before,
                "portier_request_duration_seconds_count",
                route=route.name,
                service="met-svc",
            )
            >= 5
        )

    after = settled(lambda: scrape(client), moved)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    def count(r: str, s: str, method: str, status: str) -> float:
        return requests(after, r, s, method, status) - requests(before, r, s, method, status)

    assert count(route.name, "met-svc", "GET", "2xx") == 3
    assert count(route.name, "met-svc", "GET", "4xx") == 1
    assert count(route.name, "met-svc", "POST", "2xx") == 1
    assert count("unmatched", "unmatched", "GET", "4xx") == 1
    duration = "portier_request_duration_seconds"
    assert delta(f"{duration}_count", route=route.name, service="met-svc") == 5
    assert delta(f"{duration}_sum", route=route.name, service="met-svc") > 0
    assert delta("portier_upstream_duration_seconds_count", service="met-svc") == 5
    bytes_total = "portier_body_bytes_total"
    assert delta(bytes_total, route=route.name, service="met-svc", direction="in") == 5
    assert delta(bytes_total, route=route.name, service="met-svc", direction="out") > 0
    assert value(after, "portier_config_version") == holder.current.version
    assert 0 <= value(after, "portier_config_age_seconds") < 60


def test_refusals_are_counted_by_tier_code_and_upstream_error_kind(client, upstream, dead_url):
    tier = RateLimitTier.objects.create(name="met-tier", rate="1/h", key="route")
    anyone = RolePolicy.objects.create(name="met-anyone", kind=RolePolicy.Kind.AUTHENTICATED)
    limited = make_route(make_service("met-limited", upstream.url), "/lim", rate_limit_tier=tier)
    make_route(make_service("met-private", upstream.url), "/private", role_policy=anyone)
    down = make_route(make_service("met-down", dead_url), "/down")
    publish()
    before = scrape(client)

    assert [client.get("/lim").status_code for _ in range(2)] == [200, 429]
    assert client.get("/private").status_code == 401
    assert client.get("/down").status_code == 502

    def moved(samples: Samples) -> bool:
        code = ("portier_upstream_errors_total",)
        return value(samples, *code, service="met-down", kind="upstream_unavailable") > value(
            before, *code, service="met-down", kind="upstream_unavailable"
        )

    after = settled(lambda: scrape(client), moved)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("portier_rate_limited_total", tier="met-tier") == 1
    assert delta("portier_auth_failures_total", code="missing_credentials") == 1
    assert (
        delta("portier_upstream_errors_total", service="met-down", kind="upstream_unavailable") == 1
    )
    assert (
        requests(after, limited.name, "met-limited", "GET", "4xx")
        - requests(before, limited.name, "met-limited", "GET", "4xx")
        == 1
    )
    assert (
        requests(after, down.name, "met-down", "GET", "5xx")
        - requests(before, down.name, "met-down", "GET", "5xx")
        == 1
    )
    # No upstream answered: no upstream duration for the dead service.
    assert delta("portier_upstream_duration_seconds_count", service="met-down") == 0


def _request_series(samples: Samples) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    """The series that requests create (target and configuration gauges follow the config)."""
    return {
        key
        for key in samples
        if key[0].startswith("portier_")
        and not key[0].startswith(("portier_target_", "portier_config_"))
    }


def test_random_paths_and_methods_do_not_grow_the_series(client):
    methods = ["GET", "POST", "DELETE", "PROPFIND", "MKCOL"]
    for method in methods:  # every label combination these requests can reach exists now
        client.request(method, "/met-warm-up")
    before = settled(
        lambda: scrape(client),
        lambda s: requests(s, "unmatched", "unmatched", "OTHER", "4xx") > 0,
    )

    for _ in range(200):
        path = f"/{uuid.uuid4().hex}/{uuid.uuid4().hex[:8]}"
        assert client.request(random.choice(methods), path).status_code == 404

    def counted(samples: Samples) -> bool:
        return (
            sum(
                requests(samples, "unmatched", "unmatched", m, "4xx")
                - requests(before, "unmatched", "unmatched", m, "4xx")
                for m in ("GET", "POST", "DELETE", "OTHER")
            )
            >= 200
        )

    after = settled(lambda: scrape(client), counted)

    assert counted(after)
    assert _request_series(after) == _request_series(before)


def test_metrics_are_for_operators_only(client, settings):
    settings.PORTIER_OPS_NETWORKS = ["10.0.0.0/8"]
    settings.PORTIER_OPS_TOKEN = "ops-secret"

    refused = client.get("/metrics")
    spoofed = client.get("/metrics", headers={"X-Forwarded-For": "10.1.2.3"})
    wrong = client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
    allowed = client.get("/metrics", headers={"Authorization": "Bearer ops-secret"})

    assert [refused.status_code, spoofed.status_code, wrong.status_code] == [403, 403, 403]
    assert refused.json()["error"]["code"] == "forbidden"
    assert "portier_" not in refused.text
    assert allowed.status_code == 200
    assert allowed.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "portier_requests_in_flight" in allowed.text


def test_target_gauges_show_a_dead_target(client, upstream, dead_url, settings):
    settings.PORTIER_HEALTH_SYNC_INTERVAL = 0.1
    service = make_service(
        "met-health",
        upstream.url,
        dead_url,
        health_path="/healthz",
        health_interval=0.3,
        health_timeout=0.2,
        healthy_threshold=1,
        unhealthy_threshold=1,
    )
    make_route(service, "/mh")
    publish()
    gauge = "portier_target_health"

    def probed(samples: Samples) -> bool:
        return (
            value(samples, gauge, service="met-health", target=dead_url, state="unhealthy") == 1
            and value(samples, gauge, service="met-health", target=upstream.url, state="healthy")
            == 1
        )

    deadline = time.monotonic() + 10
    samples = scrape(client)
    while not probed(samples) and time.monotonic() < deadline:
        time.sleep(0.1)
        samples = scrape(client)

    assert probed(samples)
    for state in ("healthy", "unchecked"):
        assert value(samples, gauge, service="met-health", target=dead_url, state=state) == 0
    assert value(samples, "portier_target_available", service="met-health", target=dead_url) == 0
    assert (
        value(samples, "portier_target_available", service="met-health", target=upstream.url) == 1
    )
    circuit = "portier_target_circuit"
    assert value(samples, circuit, service="met-health", target=dead_url, state="closed") == 1
    assert value(samples, circuit, service="met-health", target=dead_url, state="open") == 0


@pytest.fixture(scope="module")
def gateways_sharing_metrics(django_db_setup: Any) -> Iterator[list[str]]:
    """Two gateway processes that share this run's Redis and one metrics directory, as gunicorn's
    workers do (gateway_site/gunicorn.conf.py)."""
    with (
        tempfile.TemporaryDirectory(prefix="portier-met-") as metrics_dir,
        gateway_processes(PROMETHEUS_MULTIPROC_DIR=metrics_dir) as urls,
    ):
        yield urls


def test_worker_processes_are_summed_by_either_ones_metrics(gateways_sharing_metrics, upstream):
    first, second = gateways_sharing_metrics
    route = make_route(make_service("met-multi", upstream.url), "/multi")
    publish()
    deadline = time.monotonic() + 5
    while not all(
        httpx.get(url + "/health", timeout=2).json()["config"]["token"] == holder.current.token
        for url in gateways_sharing_metrics
    ):
        assert time.monotonic() < deadline, "processes did not load the configuration"
        time.sleep(0.05)

    for url, times in ((first, 3), (second, 5)):
        for _ in range(times):
            assert httpx.get(url + "/multi", timeout=10).status_code == 200

    for url in (first, second):
        samples = settled(
            lambda url=url: scrape(url),
            lambda s: requests(s, route.name, "met-multi", "GET", "2xx") >= 8,
        )
        assert requests(samples, route.name, "met-multi", "GET", "2xx") == 8
        assert (
            value(
                samples,
                "portier_request_duration_seconds_count",
                route=route.name,
                service="met-multi",
            )
            == 8
        )
        assert value(samples, "portier_requests_in_flight") == 0

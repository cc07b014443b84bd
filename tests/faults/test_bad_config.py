"""Bad configuration never takes the gateway down: a running gateway process serves a snapshot's
good routes without its broken ones (and says which it skipped), and keeps serving the previous
version when a published snapshot cannot be read at all."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.core.cache import cache

from routing.config.build import snapshot_build
from routing.config.publish import SNAPSHOT_KEY, VERSION_KEY
from tests.conftest import make_route, make_service, received
from tests.servers import gateway_processes

pytestmark = pytest.mark.django_db

GOOD_VERSION = 900_001


def broken_entries(good_service: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """Services and routes no admin form would save, each named for what is wrong with it."""
    route = {
        "hosts": [],
        "methods": [],
        "match_type": "prefix",
        "header_matches": {},
        "priority": 0,
        "strip_prefix": False,
        "rewrite": "",
        "preserve_host": False,
        "policy": None,
        "tier": None,
        "tier_overrides": [],
    }
    services = [
        {**good_service, "id": 9001, "name": "sluggish", "read_timeout": "soon"},
        {**good_service, "id": 9002, "name": "numbered", "targets": [{"url": 8080, "weight": 1}]},
        None,  # not an object at all
    ]
    routes = [
        {**route, "id": 9101, "name": "bad-regex", "path": "/bad/(", "match_type": "regex"},
        {**route, "id": 9102, "name": "no-service", "path": "/no-service", "service_id": 424242},
        {"id": 9103, "name": "incomplete", "path": "/incomplete"},
        {**route, "id": 9104, "name": "slow-service", "path": "/slow", "service_id": 9001},
        {**route, "id": 9105, "name": "numbered-target", "path": "/numbered", "service_id": 9002},
        {**route, "id": 9106, "name": "numeric-path", "path": 17, "service_id": 1},
        {**route, "id": 9107, "name": "empty-path", "path": "", "service_id": 1},
        {**route, "id": 9108, "name": "listed-headers", "path": "/h", "service_id": 1}
        | {"header_matches": ["X-A"]},
        {**route, "id": 9109, "name": "odd-match", "path": "/odd", "service_id": 1}
        | {"match_type": "glob"},
        "not-an-object",
    ]
    return services, routes


BROKEN_NAMES = {
    "bad-regex",
    "no-service",
    "incomplete",
    "slow-service",
    "numbered-target",
    "numeric-path",
    "empty-path",
    "listed-headers",
    "odd-match",
    "#12",  # the route that is not an object, by its position (after the two good ones)
}


@pytest.fixture
def published_as_before() -> Iterator[None]:
    """The test writes the cache's version key itself; put back what the run had."""
    before = cache.get(VERSION_KEY)
    yield
    if before is None:
        cache.delete(VERSION_KEY)
    else:
        cache.set(VERSION_KEY, before, None)


def publish_raw(raw: str) -> str:
    token = f"fault-{uuid.uuid4().hex[:12]}"
    cache.set(SNAPSHOT_KEY.format(token=token), raw, 600)
    cache.set(VERSION_KEY, token, None)
    return token


def health(http: httpx.Client, url: str) -> dict[str, Any]:
    return http.get(url + "/health").json()


def wait_for(check: Any, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def mixed_snapshot(upstream, published_as_before) -> str:
    """A snapshot with two good routes on the upstream and every broken entry above."""
    service = make_service("steady", upstream.url)
    make_route(service, "/steady", name="steady")
    make_route(service, "/steady-exact", name="steady-exact", match_type="exact")
    data = snapshot_build(GOOD_VERSION, "")
    good_service = data["services"][0]
    for route in data["routes"]:
        assert route["service_id"] == good_service["id"]
    services, routes = broken_entries(good_service)
    for route in routes:
        if isinstance(route, dict) and route.get("service_id") == 1:
            route["service_id"] = good_service["id"]
    data["services"] += services
    data["routes"] += routes
    token = f"fault-{uuid.uuid4().hex[:12]}"
    data["token"] = token
    cache.set(SNAPSHOT_KEY.format(token=token), json.dumps(data), 600)
    cache.set(VERSION_KEY, token, None)
    return token


def test_a_process_serves_the_good_routes_and_reports_the_broken_ones(upstream, mixed_snapshot):
    with gateway_processes(1) as [url], httpx.Client(timeout=10) as http:
        assert wait_for(lambda: health(http, url)["config"]["token"] == mixed_snapshot)

        good = [http.get(url + path) for path in ("/steady/a", "/steady-exact")]
        bad = [
            http.get(url + path)
            for path in ("/bad/x", "/no-service", "/incomplete", "/slow", "/numbered", "/h", "/odd")
        ]
        elsewhere = http.get(url + "/anything")  # the empty-path route is no catch-all
        report = health(http, url)

    assert [r.status_code for r in good] == [200, 200]
    assert {r.headers["x-upstream"] for r in good} == {"up-a"}
    assert [r.status_code for r in bad] == [404] * len(bad)
    assert {r.json()["error"]["code"] for r in bad} == {"route_not_found"}
    assert elsewhere.status_code == 404
    assert len(received(upstream)) == 2
    assert report["config"]["version"] == GOOD_VERSION
    assert report["config"]["routes"] == 2
    assert set(report["config"]["skipped_routes"]) == BROKEN_NAMES
    assert report["config"]["refresh_error"] is None
    assert report["status"] == "degraded"  # served, and an operator should look


@pytest.mark.parametrize(
    "raw",
    ["{not json", "[]", json.dumps({"version": 3, "token": "t", "built_at": 0})],
    ids=["not-json", "not-an-object", "no-routes"],
)
def test_an_unreadable_snapshot_keeps_the_previous_version_served(upstream, mixed_snapshot, raw):
    with gateway_processes(1) as [url], httpx.Client(timeout=10) as http:
        assert wait_for(lambda: health(http, url)["config"]["token"] == mixed_snapshot)

        publish_raw(raw)
        assert wait_for(lambda: health(http, url)["config"]["refresh_error"] is not None)
        report = health(http, url)
        still = http.get(url + "/steady/a")

        assert report["status"] == "degraded"
        assert report["config"]["token"] == mixed_snapshot
        assert report["config"]["version"] == GOOD_VERSION
        assert still.status_code == 200
        assert still.headers["x-upstream"] == "up-a"

        cache.set(VERSION_KEY, mixed_snapshot, None)  # the good version published again
        assert wait_for(lambda: health(http, url)["config"]["refresh_error"] is None)

"""What the response cache did, counted as the record stage counts every request: the Prometheus
counter portier_cache_requests_total{route, result}, and the cache hits and lookups of the
per-route traffic summary (in the cache, never the database) that the route's admin page shows
as its hit ratio over the last 15 minutes."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from django.core.cache import cache
from django.core.cache.backends.locmem import LocMemCache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from prometheus_client.parser import text_string_to_metric_families

from routing.config.holder import holder
from routing.config.spec import RouteSpec
from routing.models import Route
from routing.observe import metrics, traffic_stats
from routing.observe.traffic_stats import CACHE_WINDOW, Counters, flush, summary
from routing.proxy.context import RequestContext
from tests.conftest import make_route, make_service, publish

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_traffic_yet() -> Iterator[None]:
    traffic_stats.counters.take()
    cache.delete_pattern("{traffic}:*")
    yield
    traffic_stats.counters.take()
    cache.delete_pattern("{traffic}:*")


def cache_counts(route: str) -> dict[str, float]:
    """portier_cache_requests_total of one route by result, as /metrics exposes it."""
    text, _ = metrics.exposition()
    return {
        sample.labels["result"]: sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name == "portier_cache_requests_total" and sample.labels["route"] == route
    }


def served_route(name: str, **fields: object) -> RouteSpec:
    """The route as the gateway serves it (its RouteSpec from the published snapshot)."""
    make_route(make_service(f"{name}-svc", "http://127.0.0.1:9"), f"/{name}", name=name, **fields)
    publish()
    return next(r for r in holder.current.routes if r.name == name)


def finished(route: RouteSpec, cache_result: str, status: int = 200) -> None:
    """One request with what the cache stage decided, recorded as stages/record.py does."""
    ctx = RequestContext(
        method="GET",
        scheme="http",
        raw_path=f"/{route.name}".encode(),
        query_string=b"",
        headers=[],
        client_ip="127.0.0.1",
        receive_body=None,
        has_body=False,
        snapshot=holder.current,
        route=route,
        status=status,
        cache_result=cache_result,
    )
    metrics.request_finished(ctx, None, 0.002)
    traffic_stats.request_finished(ctx, None, 0.002)


RESULTS = ("HIT", "HIT", "HIT", "MISS", "STALE", "BYPASS", "")


def test_the_counter_counts_each_result_by_route():
    route = served_route("cached-met", cache={"ttl": 60})
    before = cache_counts("cached-met")

    for result in RESULTS:
        finished(route, result)

    after = cache_counts("cached-met")
    moved = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    assert moved == {"hit": 3.0, "miss": 1.0, "stale": 1.0, "bypass": 1.0}


def test_a_request_the_cache_did_not_look_at_is_not_counted():
    route = served_route("uncached-met")
    before = cache_counts("uncached-met")

    finished(route, "")
    finished(route, "SOMETHING")  # not a result: never a label value

    assert cache_counts("uncached-met") == before
    assert set(before) <= {"hit", "miss", "stale", "bypass"}


def test_the_traffic_summary_counts_hits_and_lookups_per_route():
    route = served_route("cached-sum", cache={"ttl": 60})
    plain = served_route("plain-sum")

    for result in RESULTS:
        finished(route, result)
    finished(plain, "")
    flush()
    with CaptureQueriesContext(connection) as queries:
        found = summary(window=CACHE_WINDOW)

    rows = {r.route: r for r in found.routes}
    assert len(found.minutes) == CACHE_WINDOW + 1  # 15 minutes, the current one included
    assert (rows["cached-sum"].requests, rows["cached-sum"].cache_hits) == (7, 3)
    assert rows["cached-sum"].cache_lookups == 6  # hit, miss, stale, bypass
    assert rows["cached-sum"].cache_hit_ratio == 50.0
    assert (rows["plain-sum"].cache_lookups, rows["plain-sum"].cache_hit_ratio) == (0, None)
    assert (found.total.cache_hits, found.total.cache_lookups) == (3, 6)
    assert sum(rows["cached-sum"].histogram) == 7  # the latency buckets are still whole
    assert len(queries) == 0


@pytest.mark.parametrize("backend", ["redis", "locmem"])
def test_hits_and_lookups_from_two_processes_add_up(backend):
    store = cache if backend == "redis" else LocMemCache("cache-traffic-test", {})
    now = time.time()
    first, second = Counters(), Counters()
    for result in ("HIT", "HIT", "MISS"):
        first.add("orders", 200, 0.004, now, result)
    second.add("orders", 200, 0.004, now - 600, "HIT")  # ten minutes ago
    second.add("orders", 502, 0.030, now, "STALE")
    second.add("orders", 200, 0.004, now)  # no lookup

    flush(source=first, cache=store)
    flush(source=second, cache=store)
    recent = summary(routes=["orders"], now=now, cache=store)
    longer = summary(routes=["orders"], now=now, cache=store, window=CACHE_WINDOW)

    assert (recent.routes[0].cache_hits, recent.routes[0].cache_lookups) == (2, 4)
    assert recent.routes[0].errors == 1
    orders = longer.routes[0]
    assert (orders.requests, orders.cache_hits, orders.cache_lookups) == (6, 3, 5)
    assert orders.cache_hit_ratio == 60.0


def test_the_route_page_shows_the_hit_ratio_of_the_last_15_minutes(admin_client):
    route = served_route("cached-page", cache={"ttl": 60})
    page_url = f"/admin/routing/route/{Route.objects.get(name='cached-page').pk}/change/"

    empty = admin_client.get(page_url).content.decode()
    assert "No cache lookups in the last 15 minutes." in empty

    for result in ("HIT", "HIT", "HIT", "MISS"):
        finished(route, result)
    flush()
    page = admin_client.get(page_url).content.decode()

    shown = re.search(
        r"Cache hit ratio \(last 15 min\):</label>\s*<div class=\"readonly\">(.*?)</div>", page
    )
    assert shown is not None
    assert shown.group(1) == "75.0% (3 hits of 4 lookups)"


def test_the_route_page_still_opens_when_the_cache_does_not_answer(admin_client, monkeypatch):
    served_route("cached-down", cache={"ttl": 60})

    def down(**kwargs: object) -> None:
        raise ConnectionError("redis is down")

    monkeypatch.setattr(traffic_stats, "summary", down)
    page = admin_client.get(f"/admin/routing/route/{Route.objects.get().pk}/change/")

    assert page.status_code == 200
    assert "Unknown: the cache did not answer." in page.content.decode()

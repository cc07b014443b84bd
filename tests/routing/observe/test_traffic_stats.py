"""The live traffic on the admin index: requests per minute, error rate and latency per route,
counted in each gateway process and summed in the cache (Redis), never in the database. The
dashboard's other numbers (rate-limited, would-deny, services, the hour): test_dashboard.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import Group, Permission
from django.core.cache import cache
from django.core.cache.backends.locmem import LocMemCache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from routing.config.holder import holder
from routing.observe import traffic_stats
from routing.observe.traffic_stats import KEEP, NO_ROUTE, Counters, flush, percentile, summary
from tests.conftest import make_route, make_service, publish
from tests.routing.observe import dashboard_page
from tests.routing.proxy import test_limits

pytestmark = pytest.mark.django_db(transaction=True)

two_gateways = test_limits.two_gateways


@pytest.fixture(autouse=True)
def _no_traffic_yet() -> Iterator[None]:
    """Each test starts with nothing counted, here or in the cache."""
    traffic_stats.counters.take()
    cache.delete_pattern("{traffic}:*")
    yield
    cache.delete_pattern("{traffic}:*")


def traffic(admin_client: Client) -> dict[str, dict[str, Any]]:
    """The index's routes and whole-gateway row: route -> requests per minute (the chart's values)
    and the numbers shown beside the requests, error rate and latency charts."""
    page = admin_client.get("/admin/")
    assert page.status_code == 200
    found = dashboard_page.read(page.content.decode())
    panels = dict(found.routes)
    if found.routes and found.gateway is not None:
        panels["All routes"] = found.gateway
    return {
        name: {
            "minutes": [int(n or 0) for n in panel["requests"].values],
            "requests": f"{panel['requests'].total:.0f}",
            "errors": panel["error_rate"].headline.split(" (")[0],
            "latency": panel["latency"].headline,
        }
        for name, panel in panels.items()
    }


def p95(latency: str) -> float:
    """The p95 in "p50 3.2 ms, p95 40 ms"."""
    return float(latency.split("p95 ")[1].removesuffix(" ms").replace(",", ""))


def eventually(read: Callable[[], dict[str, dict[str, Any]]], done: Callable[[Any], bool]) -> Any:
    """Poll the page until the monitor has flushed what the test expects (within 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        table = read()
        if done(table):
            return table
        assert time.monotonic() < deadline, f"the summary never showed it: {table}"
        time.sleep(0.1)


def test_the_admin_index_shows_requests_error_rate_and_p95_per_route(
    admin_client, client, upstream, dead_url
):
    make_route(make_service("busy", upstream.url), "/busy", name="busy")
    make_route(make_service("broken", dead_url, retries=0), "/broken", name="broken")
    make_route(make_service("slow", upstream.url), "/_slow", name="slow")
    publish()

    statuses = [client.get("/busy").status_code for _ in range(20)]
    statuses += [client.get("/broken").status_code for _ in range(5)]
    statuses += [client.get("/_slow", params={"seconds": "0.2"}).status_code for _ in range(5)]

    assert statuses[:20] == [200] * 20
    assert set(statuses[20:25]) <= {502, 503}
    assert statuses[25:] == [200] * 5
    table = eventually(
        lambda: traffic(admin_client),
        lambda t: (
            {r: t.get(r, {}).get("requests") for r in ("busy", "broken", "slow")}
            == {"busy": "20", "broken": "5", "slow": "5"}
        ),
    )
    assert set(table) == {"busy", "broken", "slow", "All routes"}
    assert table["busy"]["errors"] == "0.0 %"
    assert table["broken"]["errors"] == "100 %"
    assert table["slow"]["errors"] == "0.0 %"
    assert 150 <= p95(table["slow"]["latency"]) <= 400
    assert p95(table["busy"]["latency"]) < 150
    total = table["All routes"]
    assert total["requests"] == "30"
    assert total["errors"] == f"{100 * 5 / 30:.0f} %"
    # Fifteen minutes shown, the current one last; the traffic falls in the last one or two.
    assert len(total["minutes"]) == 15
    assert sum(total["minutes"][-2:]) == 30


def test_it_counts_requests_that_match_no_route_under_one_row(admin_client, client, upstream):
    make_route(make_service("svc", upstream.url), "/known", name="known")
    publish()

    for i in range(3):
        assert client.get(f"/unknown-{i}").status_code == 404

    # The monitor may flush between two requests: wait for all three.
    table = eventually(
        lambda: traffic(admin_client), lambda t: t.get(NO_ROUTE, {}).get("requests") == "3"
    )
    assert table[NO_ROUTE]["errors"] == "0.0 %"  # a 404 is the client's mistake, not an error
    assert "known" not in table


def test_it_shows_nothing_for_routes_without_traffic(admin_client, client, upstream):
    make_route(make_service("svc", upstream.url), "/used", name="used")
    make_route(make_service("idle", upstream.url), "/idle", name="idle")
    publish()
    page = admin_client.get("/admin/").content.decode()
    assert "No traffic through the gateway in the last 15 minutes." in page
    assert 'class="app-routing module' in page  # the app list is still there

    assert client.get("/used").status_code == 200

    table = eventually(lambda: traffic(admin_client), lambda t: "used" in t)
    assert set(table) == {"used", "All routes"}
    # The idle route has no row, but its service is listed with its health.
    assert 'data-route="idle"' not in admin_client.get("/admin/").content.decode()


def serving(url: str, token: str) -> bool:
    return httpx.get(url + "/health", timeout=2).json()["config"]["token"] == token


def test_counts_from_two_gateway_processes_add_up(two_gateways, admin_client, upstream):
    make_route(make_service("shared", upstream.url), "/shared", name="shared")
    publish()
    deadline = time.monotonic() + 5
    while not all(serving(url, holder.current.token) for url in two_gateways):
        assert time.monotonic() < deadline, "processes did not load the configuration"
        time.sleep(0.05)

    for i in range(14):
        assert httpx.get(two_gateways[i % 2] + "/shared", timeout=10).status_code == 200

    table = eventually(
        lambda: traffic(admin_client), lambda t: t.get("shared", {}).get("requests") == "14"
    )
    assert table["shared"]["errors"] == "0.0 %"


@pytest.mark.parametrize("backend", ["redis", "locmem"])
def test_two_processes_flushing_to_one_cache_add_up(backend):
    store = cache if backend == "redis" else LocMemCache("traffic-test", {})
    now = time.time()
    first, second = Counters(), Counters()
    for _ in range(7):
        first.add("orders", 200, 0.004, now)
    first.add("orders", 502, 0.030, now)
    for _ in range(3):
        second.add("orders", 503, 0.250, now)
    second.add("users", 200, 0.001, now - 60)  # the minute before

    assert flush(source=first, cache=store) == 1
    assert flush(source=second, cache=store) == 2
    found = summary(routes=["orders", "users", "unused"], now=now, cache=store)

    by_route = {r.route: r for r in found.routes}
    assert set(by_route) == {"orders", "users"}
    assert by_route["orders"].per_minute == (0, 0, 0, 0, 0, 11)
    assert by_route["orders"].errors == 4
    assert sum(by_route["orders"].histogram) == 11
    assert by_route["users"].per_minute == (0, 0, 0, 0, 1, 0)
    assert found.total.requests == 12
    assert found.total.errors == 4
    assert flush(source=first, cache=store) == 0  # nothing counted twice


def test_reading_the_summary_never_queries_the_database():
    source = Counters()
    source.add("orders", 200, 0.001, time.time())
    flush(source=source)

    with CaptureQueriesContext(connection) as queries:
        found = summary()

    assert [r.route for r in found.routes] == ["orders"]
    assert len(queries) == 0


class FlakyCache(LocMemCache):
    """A cache that fails once, after writing `good` increments."""

    def __init__(self, good: int) -> None:
        super().__init__("traffic-flaky", {})
        self.good = good

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        if self.good == 0:
            self.good = -1
            raise ConnectionError("cache down")
        self.good -= 1
        return super().incr(key, delta, version)


def test_a_failed_flush_keeps_what_it_did_not_write_for_the_next_one():
    store = FlakyCache(good=1)
    source, now = Counters(), time.time()
    for _ in range(4):
        source.add("orders", 500, 0.002, now)

    with pytest.raises(ConnectionError):
        flush(source=source, cache=store)
    flush(source=source, cache=store)

    (orders,) = summary(routes=["orders"], now=now, cache=store).routes
    assert orders.requests == 4
    assert orders.errors == 4
    assert sum(orders.histogram) == 4


def test_a_process_keeps_only_the_last_minutes_when_nothing_flushes():
    source, now = Counters(), time.time()
    for minute in range(60):
        source.add("orders", 200, 0.001, now + minute * 60)

    minutes = {m for m, _ in source.take()}
    assert len(minutes) == KEEP + 1
    assert max(minutes) == int(now // 60) + 59


def test_p95_comes_from_the_histogram_within_its_bucket():
    histogram = [0] * (len(traffic_stats.BOUNDS_MS) + 1)
    histogram[0] = 95  # under 1 ms
    histogram[traffic_stats.BOUNDS_MS.index(250)] = 5  # 200..250 ms
    assert percentile(histogram, 0.95) == pytest.approx(1.0)
    assert 200 < percentile(histogram, 0.99) <= 250
    assert percentile([0] * len(histogram), 0.95) is None


def test_it_escapes_route_names(admin_client):
    source = Counters()
    source.add("<script>alert(1)</script>", 200, 0.001, time.time())
    flush(source=source)

    page = admin_client.get("/admin/").content.decode()

    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)" not in page


@pytest.fixture
def some_traffic() -> None:
    source = Counters()
    source.add("orders", 200, 0.001, time.time())
    flush(source=source)


def test_an_auditor_sees_the_index_but_not_the_traffic(some_traffic, admin_client):
    # As the audit migration makes it (flushed by earlier transactional tests): view audit rows.
    group, _ = Group.objects.get_or_create(name="Auditor")
    group.permissions.add(Permission.objects.get(codename="view_auditentry"))
    auditor = User.objects.create_user("audrey", email="audrey@example.com", is_staff=True)
    auditor.groups.add(group)
    auditor_client = Client()
    auditor_client.force_login(auditor)

    assert "orders" in traffic(admin_client)
    page = auditor_client.get("/admin/")
    assert page.status_code == 200
    assert "Audit entries" in page.content.decode()
    assert 'id="dashboard"' not in page.content.decode()


def test_a_user_who_is_not_staff_is_sent_to_the_login_page(some_traffic):
    user = User.objects.create_user("nora", email="nora@example.com")
    anonymous, logged_in = Client(), Client()
    logged_in.force_login(user)

    for browser in (anonymous, logged_in):
        page = browser.get("/admin/")
        assert page.status_code == 302
        assert page["Location"].startswith("/admin/login/")

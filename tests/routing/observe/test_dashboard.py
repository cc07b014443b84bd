"""The live dashboard on the admin index and a route's page, its refreshing fragment and
`GET /admin/api/traffic`: requests, error rate, p50/p95, rate-limited and would-deny per minute over
15 or 60 minutes, for the gateway, each service and each route, and what is failing now. Counted
in the gateway processes and summed in Redis; never read from the database."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from routing.config.build import snapshot_build
from routing.config.holder import holder
from routing.config.publish import SNAPSHOT_KEY, VERSION_KEY
from routing.models import Route
from routing.observe import traffic_stats
from routing.observe.dashboard import dashboard
from routing.observe.traffic_stats import KEY, TTL, Counters, flush, summary
from routing.upstream import registry
from tests.conftest import make_route, make_service, publish
from tests.routing.observe import dashboard_page
from tests.routing.observe.dashboard_page import Page
from tests.routing.proxy.test_limits import tier
from tests.routing.upstream.test_health_checks import FAST_CHECKS

pytestmark = pytest.mark.django_db(transaction=True)

FRAGMENT = "/admin/dashboard/fragment"


@pytest.fixture(autouse=True)
def _no_traffic_yet() -> Iterator[None]:
    """Each test starts with nothing counted and no registry or health state in the cache."""
    traffic_stats.counters.take()
    for pattern in ("{traffic}:*", "registry:*", "health:*"):
        cache.delete_pattern(pattern)
    yield
    cache.delete_pattern("{traffic}:*")


@pytest.fixture
def quick_health(settings) -> None:
    settings.PORTIER_HEALTH_SYNC_INTERVAL = 0.1


def auditor_client() -> Client:
    group, _ = Group.objects.get_or_create(name="Auditor")
    group.permissions.add(Permission.objects.get(codename="view_auditentry"))
    auditor = User.objects.create_user(
        f"aud-{uuid.uuid4().hex[:6]}", email="a@example.com", is_staff=True
    )
    auditor.groups.add(group)
    browser = Client()
    browser.force_login(auditor)
    return browser


def fragment(browser: Client, **query: Any) -> Page:
    answer = browser.get(FRAGMENT, query)
    assert answer.status_code == 200
    assert answer["Cache-Control"].startswith("max-age=0")  # never cached: it is live
    return dashboard_page.read(answer.content.decode())


def eventually(read: Callable[[], Page], done: Callable[[Page], bool], seconds: float = 8) -> Page:
    """Read the page again until it shows what the test waits for (the flusher, the monitor)."""
    deadline = time.monotonic() + seconds
    while True:
        page = read()
        if done(page):
            return page
        assert time.monotonic() < deadline, f"the dashboard never showed it:\n{page.html[:3000]}"
        time.sleep(0.1)


def finished(route: str, status: int = 200, *, would_deny: str = "", code: str | None = None):
    """One request as the record stage hands it over (only what traffic_stats reads)."""
    ctx = SimpleNamespace(
        route=SimpleNamespace(name=route), status=status, cache_result="", would_deny=would_deny
    )
    traffic_stats.request_finished(ctx, code, 0.004)  # type: ignore[arg-type]


# Counting and reading


def test_it_counts_rate_limited_and_would_deny_answers_per_minute():
    now = time.time()
    source = Counters()
    for _ in range(4):
        source.add("orders", 200, 0.002, now - 60)
    source.add("orders", 429, 0.001, now - 60, limited=True)
    source.add("orders", 200, 0.002, now, would_deny=True)
    source.add("orders", 200, 0.002, now, would_deny=True)
    source.add("orders", 429, 0.001, now, limited=True)
    flush(source=source)

    (orders,) = summary(now=now, window=14).routes
    found = dashboard(window=15, now=now)

    assert orders.rate_limited == 2
    assert orders.would_deny == 2
    (route,) = found.routes
    charts = {c.metric: c for c in route.charts}
    assert charts["rate_limited"].values.split(",")[-2:] == ["1", "1"]
    assert charts["would_deny"].values.split(",")[-2:] == ["0", "2"]
    assert charts["would_deny"].headline == "would have denied 2"
    assert charts["requests"].values.split(",")[-2:] == ["5", "3"]


def test_the_record_stage_counts_429_rate_limited_and_report_only_denials():
    finished("orders", 429, code="rate_limited")
    finished("orders", 429, code="too_many_in_flight")  # shed, not rate-limited
    finished("orders", would_deny="policy")
    finished("orders", would_deny="limit")
    finished("orders")
    flush()

    (orders,) = summary().routes

    assert (orders.requests, orders.rate_limited, orders.would_deny) == (5, 1, 2)


def test_each_minute_has_its_own_p50_and_p95():
    now = time.time()
    source = Counters()
    for _ in range(10):
        source.add("orders", 200, 0.004, now - 120)  # 3..5 ms
    for _ in range(9):
        source.add("orders", 200, 0.004, now)
    source.add("orders", 200, 0.240, now)  # one slow answer in the current minute
    flush(source=source)

    (route,) = dashboard(window=15, now=now).routes
    latency = next(c for c in route.charts if c.metric == "latency")
    p95s = latency.values.split(",")

    assert p95s[-3] and 3 <= float(p95s[-3]) <= 5
    assert p95s[-2] == ""  # no requests that minute: no latency, not zero
    assert 200 <= float(p95s[-1]) <= 250
    assert latency.svg.count("<title>") == 1 + 15  # the chart's, then one per minute


def test_the_hour_window_reads_counts_59_minutes_old():
    now = time.time()
    then, source = Counters(), Counters()
    then.add("orders", 200, 0.002, now - 59 * 60)
    then.add("orders", 502, 0.002, now - 59 * 60)
    flush(source=then)  # flushed back then: a process holds only its last 10 minutes
    source.add("orders", 200, 0.002, now)
    flush(source=source)

    hour = dashboard(window=60, now=now)
    quarter = dashboard(window=15, now=now)

    assert len(hour.labels) == 60
    requests = next(c for c in hour.gateway.charts if c.metric == "requests")
    assert requests.values.split(",")[0] == "2"
    assert requests.values.split(",")[-1] == "1"
    errors = next(c for c in hour.gateway.charts if c.metric == "error_rate")
    assert errors.values.split(",")[0] == "50"
    assert quarter.gateway.traffic.requests == 1
    # Each minute stays in Redis for more than an hour after it was last written.
    assert cache.ttl(KEY.format(int(now // 60) - 59)) > 61 * 60
    assert TTL >= 61 * 60


def test_it_reads_minutes_written_before_rate_limits_were_counted():
    minute = int(time.time() // 60)
    client = cache.client.get_client(write=True)
    key = cache.make_key(KEY.format(minute))
    client.hset(key, mapping={"n:orders": 3, "e:orders": 1, "5:orders": 3, "zz:orders": 9})

    (orders,) = summary().routes

    assert (orders.requests, orders.errors, orders.rate_limited, orders.would_deny) == (3, 1, 0, 0)


def test_a_services_traffic_is_the_sum_of_its_routes(upstream):
    shop = make_service("shop", upstream.url)
    make_route(shop, "/cart", name="cart")
    make_route(shop, "/pay", name="pay")
    make_route(make_service("search", upstream.url), "/find", name="find")
    publish()
    now = time.time()
    source = Counters()
    for route, n in (("cart", 3), ("pay", 4), ("find", 2)):
        for _ in range(n):
            source.add(route, 200, 0.002, now)
    source.add("pay", 503, 0.002, now - 60)
    flush(source=source)

    services = {s.name: s for s in dashboard(window=15, now=now).services}

    assert services["shop"].traffic.requests == 8
    assert services["shop"].traffic.errors == 1
    assert services["shop"].traffic.per_minute[-2:] == (1, 7)
    assert services["search"].traffic.requests == 2
    assert services["shop"].status == "healthy"


def test_reading_the_dashboard_never_queries_the_database(upstream):
    make_route(make_service("svc", upstream.url), "/x", name="x")
    publish()
    dashboard()  # the data plane (the board's monitor) started once

    with CaptureQueriesContext(connection) as queries:
        found = dashboard(window=60)

    assert found.failing is not None
    assert len(queries) == 0


# The pages


def test_the_index_and_the_fragment_chart_real_traffic(admin_client, client, upstream, dead_url):
    make_route(make_service("shop", upstream.url), "/shop", name="shop")
    make_route(make_service("gone", dead_url, retries=0), "/gone", name="gone")
    make_route(
        make_service("tight", upstream.url), "/tight", name="tight", rate_limit_tier=tier("2/h")
    )
    publish()
    statuses = [client.get("/shop").status_code for _ in range(6)]
    statuses += [client.get("/gone").status_code for _ in range(2)]
    statuses += [client.get("/tight").status_code for _ in range(5)]
    assert statuses == [200] * 6 + [502] * 2 + [200, 200] + [429] * 3
    flush()

    page = eventually(
        lambda: fragment(admin_client),
        lambda p: (
            {n: p.routes[n]["requests"].total for n in p.routes}
            == {
                "shop": 6,
                "gone": 2,
                "tight": 5,
            }
        ),
    )
    index = dashboard_page.read(admin_client.get("/admin/").content.decode())

    assert set(index.routes) == set(page.routes)
    assert 'id="dashboard-window-toggle"' in index.html
    assert "portier/dashboard.js" in index.html
    assert page.gateway["requests"].total == 13
    assert len(page.gateway["requests"].values) == 15
    assert page.routes["gone"]["error_rate"].headline == "100 % (2 errors)"
    assert page.routes["tight"]["rate_limited"].total == 3
    assert page.routes["tight"]["rate_limited"].headline == "3"
    assert page.gateway["rate_limited"].total == 3
    assert page.routes["shop"]["latency"].headline.startswith("p50 ")
    assert page.services["shop"]["requests"].total == 6
    assert "healthy" in page.services["shop"].text
    # Tooltips name the minute and the value; the scale says its top and 0.
    assert ": 6 requests</title>" in page.html


def test_the_hour_toggle_shows_sixty_minutes(admin_client):
    finished("orders")
    flush()

    quarter = fragment(admin_client, window=15)
    hour = fragment(admin_client, window=60)
    index = admin_client.get("/admin/", {"window": "60"}).content.decode()

    assert len(quarter.routes["orders"]["requests"].values) == 15
    assert len(hour.routes["orders"]["requests"].values) == 60
    assert "Whole gateway, last 60 minutes" in index  # works without JavaScript too
    assert 'aria-current="true">hour</a>' in index


def test_report_only_denials_show_per_route(admin_client):
    finished("orders", would_deny="policy")
    finished("orders", would_deny="limit")
    finished("orders")
    flush()

    page = fragment(admin_client)

    assert "would have denied 2" in page.routes["orders"].text
    assert page.gateway["would_deny"].headline == "would have denied 2"


def test_a_routes_page_shows_its_own_charts(admin_client, client, upstream):
    route = make_route(make_service("svc", upstream.url), "/mine", name="mine", cache={"ttl": 60})
    make_route(make_service("other", upstream.url), "/other", name="other")
    publish()
    for _ in range(3):
        assert client.get("/mine").status_code == 200
    assert client.get("/other").status_code == 200
    flush()

    html = admin_client.get(f"/admin/routing/route/{route.pk}/change/").content.decode()
    page = dashboard_page.read(html)
    refreshed = fragment(admin_client, route="mine", window=60)

    assert page.route is not None
    assert page.route["requests"].total == 3
    assert not page.routes  # only this route
    assert 'data-route="mine"' in html
    assert "Test this route" in html
    assert "Cache hit ratio" in html
    assert refreshed.route["requests"].total == 3
    assert len(refreshed.route["requests"].values) == 60


def test_auditors_see_no_dashboard_and_cannot_read_its_fragment_or_api(admin_client):
    finished("orders")
    flush()
    auditor = auditor_client()

    index = auditor.get("/admin/")

    assert index.status_code == 200
    assert 'id="dashboard"' not in index.content.decode()
    assert auditor.get(FRAGMENT).status_code == 403
    assert auditor.get("/admin/api/traffic").status_code == 403
    anonymous = Client().get(FRAGMENT)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/admin/login/")
    assert 'id="dashboard"' in admin_client.get("/admin/").content.decode()


# Failing now


def test_everything_is_healthy_when_nothing_fails(admin_client, upstream):
    make_route(make_service("svc", upstream.url), "/ok", name="ok")
    publish()

    page = fragment(admin_client)

    assert page.failing == []
    assert page.failing_text.startswith("Failing now Everything is healthy")


def test_failing_now_lists_an_open_circuit(admin_client, client, dead_url):
    make_route(
        make_service("flaky", dead_url, retries=0, breaker_failures=1, breaker_cooldown=60),
        "/flaky",
        name="flaky",
    )
    publish()

    assert client.get("/flaky").status_code == 502
    page = fragment(admin_client)

    assert f"Circuit open flaky: {dead_url}: no requests sent" in page.failing
    assert "unavailable" in page.services["flaky"].text


def test_failing_now_lists_an_unhealthy_target(admin_client, upstream, dead_url, quick_health):
    service = make_service("probed", upstream.url, dead_url, health_path="/health", **FAST_CHECKS)
    make_route(service, "/probed", name="probed")
    publish()

    page = eventually(
        lambda: fragment(admin_client),
        lambda p: any(line.startswith("Unhealthy target") for line in p.failing),
    )

    (line,) = [line for line in page.failing if line.startswith("Unhealthy target")]
    assert line.startswith(f"Unhealthy target probed: {dead_url}:")
    assert "degraded" in page.services["probed"].text
    assert page.html.count('class="target-badge down"') == 1
    assert page.html.count('class="target-badge up"') == 1


def test_failing_now_lists_a_registered_instance_that_expired(admin_client, upstream):
    make_route(make_service("elastic", allow_registration=True), "/elastic", name="elastic")
    publish()
    registry.instance_register(service="elastic", url=upstream.url, ttl=1, instance_id="i-1")
    registry.instance_register(
        service="elastic", url=upstream.url + "/b", ttl=60, instance_id="i-2"
    )

    page = eventually(lambda: fragment(admin_client), lambda p: bool(p.failing), seconds=5)

    assert page.failing == ["Registered instance expired elastic: i-1: it stopped heartbeating"]


@pytest.fixture
def config_as_before() -> Iterator[None]:
    before = cache.get(VERSION_KEY)
    yield
    if before is None:
        cache.delete(VERSION_KEY)
    else:
        cache.set(VERSION_KEY, before, None)
    holder.refresh()


def test_failing_now_lists_a_skipped_configuration_entry(admin_client, upstream, config_as_before):
    make_route(make_service("steady", upstream.url), "/steady", name="steady")
    data = snapshot_build(Route.objects.count() + 800_000, "")
    broken = {**data["routes"][0], "id": 9101, "name": "bad-regex"}
    data["routes"].append(broken | {"path": "/bad/(", "match_type": "regex"})
    data["token"] = f"test-{uuid.uuid4().hex[:12]}"
    cache.set(SNAPSHOT_KEY.format(token=data["token"]), json.dumps(data), 600)
    cache.set(VERSION_KEY, data["token"], None)
    holder.refresh()
    assert holder.current.skipped == ("bad-regex",)

    page = fragment(admin_client)

    assert page.failing == ["Configuration entry skipped bad-regex: invalid: not served"]


# The management API


def test_the_api_answers_the_same_numbers_as_json(admin_client, upstream):
    make_route(make_service("shop", upstream.url), "/cart", name="cart")
    make_route(make_service("search", upstream.url), "/find", name="find")
    publish()
    finished("cart")
    finished("cart", 429, code="rate_limited")
    finished("find", 502)
    flush()

    hour = admin_client.get("/admin/api/traffic", {"window": 60})
    default = admin_client.get("/admin/api/traffic").json()
    wrong = admin_client.get("/admin/api/traffic", {"window": 30})

    assert hour.status_code == 200
    body = hour.json()
    assert body["window"] == 60
    assert len(body["minutes"]) == 60
    assert body["minutes"][-1].endswith(":00Z")
    assert body["gateway"]["requests"] == 3
    assert body["gateway"]["rate_limited"] == 1
    # The last two minutes: a minute may have ended between the requests and the read.
    assert sum(body["gateway"]["per_minute"]["requests"][-2:]) == 3
    routes = {r["name"]: r for r in body["routes"]}
    assert routes["find"]["error_rate"] == 100.0
    assert routes["find"]["service"] == "search"
    services = {s["name"]: s for s in body["services"]}
    assert services["shop"]["requests"] == 2
    assert services["shop"]["status"] == "healthy"
    assert services["shop"]["targets"][0]["url"] == upstream.url
    assert body["failing_now"] == []
    assert default["window"] == 15
    assert len(default["minutes"]) == 15
    assert wrong.status_code == 400


def test_the_api_schema_documents_it(admin_client):
    schema = admin_client.get("/admin/api/schema/", {"format": "json"}).json()

    operation = schema["paths"]["/admin/api/traffic/"]["get"]
    (window,) = operation["parameters"]
    assert window["name"] == "window"
    assert window["schema"]["enum"] == [15, 60]


def test_the_gateway_serves_the_dashboards_script_and_styles_itself(client):
    script = client.get("/static/portier/dashboard.js")
    styles = client.get("/static/portier/dashboard.css")

    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert "dashboard-window-toggle" in script.text
    assert styles.status_code == 200
    assert styles.headers["content-type"].startswith("text/css")

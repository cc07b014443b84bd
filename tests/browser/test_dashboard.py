"""An admin opens the dashboard on the admin index, traffic goes through the gateway, and the
dashboard moves on its own: the route's row and the whole gateway's requests count it."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from accounts.models import User
from routing.observe import traffic_stats
from tests.browser.conftest import assert_fits_the_width, eventually, keep_screenshot, log_in
from tests.conftest import make_route, make_service, publish
from tests.servers import ServerThread

pytestmark = pytest.mark.django_db(transaction=True)

REFRESH_MS = 10_000  # the dashboard fetches its body again this often (data-refresh-seconds)


def shown(chart: Locator, pattern: str = r"^([\d,]+) ") -> int:
    """The number a chart's headline gives ("1,234 (82.3/min)": 1234), 0 when the chart is not
    there. Counts are compared before and after: a run's Redis may hold earlier traffic."""
    if not chart.count():
        return 0
    found = re.search(pattern, chart.locator(".chart-value").inner_text())
    assert found, f"no count in {chart.inner_text()!r}"
    return int(found.group(1).replace(",", ""))


def stored(route: str) -> tuple[int, int]:
    """(requests, errors) of `route` in the shared traffic summary the dashboard reads."""
    found = traffic_stats.summary(routes=[route])
    row = next((r for r in found.routes if r.route == route), None)
    return (row.requests, row.errors) if row else (0, 0)


def test_the_dashboard_counts_new_traffic_without_a_reload(
    page: Page, admin: User, upstream: ServerThread, dead_url: str, client: httpx.Client
) -> None:
    make_route(make_service("orders", upstream.url), "/orders", name="orders")
    make_route(make_service("billing", dead_url), "/billing", name="billing")
    publish()
    # The page's timers run on Playwright's clock, so the next refresh comes when the test says.
    page.clock.install()
    log_in(page, admin)

    dashboard = page.locator("#dashboard")
    expect(dashboard).to_be_visible()
    expect(dashboard.locator("#failing-now")).to_be_visible()
    whole = dashboard.locator("#dashboard-gateway .chart[data-metric=requests]")
    expect(whole).to_be_visible()
    orders = dashboard.locator("#dashboard-routes tr.traffic-route[data-route=orders]")
    orders_requests = orders.locator(".chart[data-metric=requests]")
    billing = dashboard.locator("#dashboard-routes tr.traffic-route[data-route=billing]")
    billing_errors = billing.locator(".chart[data-metric=error_rate]")
    errors = r"\(([\d,]+) errors?\)"
    before = (shown(whole), shown(orders_requests), shown(billing_errors, errors))
    orders_stored, billing_errors_stored = stored("orders")[0], stored("billing")[1]

    def counted() -> bool:
        return (
            stored("orders")[0] >= orders_stored + 12
            and stored("billing")[1] >= billing_errors_stored + 3
        )

    for n in range(12):
        assert client.get(f"/orders/{n}").status_code == 200
    for n in range(3):
        assert client.get(f"/billing/{n}").status_code == 502
    # Each gateway process adds its counts to the cache about every second: the next refresh
    # must come after they are there, or the page would rightly show the old numbers.
    assert eventually(counted)
    page.clock.run_for(REFRESH_MS)

    expect(orders_requests.locator(".chart-value")).to_have_text(
        re.compile(rf"^{before[1] + 12:,} \(")
    )
    expect(billing_errors.locator(".chart-value")).to_contain_text(f"({before[2] + 3:,} errors)")
    assert shown(whole) >= before[0] + 15
    keep_screenshot(page, "dashboard")
    assert_fits_the_width(page)

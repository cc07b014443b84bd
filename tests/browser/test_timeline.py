"""An admin changes a route, sees the change served, finds the version before it in the
configuration timeline, rolls back to it, and sees the old behaviour served again."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect

from accounts.models import User
from routing.models import ConfigRevision
from tests.browser.conftest import (
    assert_fits_the_width,
    eventually,
    keep_screenshot,
    log_in,
    served_by,
)
from tests.conftest import make_route, make_service, publish
from tests.servers import ServerThread

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_rollback_in_the_timeline_serves_the_old_route_again(
    page: Page, admin: User, upstream: ServerThread, client: httpx.Client
) -> None:
    make_route(make_service("echo", upstream.url), "/old-path", name="echo")
    publish()
    good = ConfigRevision.objects.order_by("-number").values_list("number", flat=True)[0]
    assert served_by(client, "/old-path/x") == "up-a"
    log_in(page, admin)

    page.get_by_role("link", name="Routes", exact=True).click()
    page.locator("#result_list").get_by_role("link", name="echo", exact=True).click()
    page.get_by_label("Path").fill("/new-path")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".messagelist")).to_contain_text("was changed successfully")
    assert eventually(lambda: served_by(client, "/new-path/x") == "up-a")
    assert served_by(client, "/old-path/x") is None

    page.get_by_role("link", name="Home").click()
    page.get_by_role("link", name="Configuration timeline").click()
    expect(page.locator("#result_list")).to_contain_text("changed routes/echo (path)")
    assert_fits_the_width(page)
    page.locator("#result_list").get_by_role("link", name=f"v{good}", exact=True).click()
    page.get_by_role("link", name="Roll back to this version").click()

    diff = page.locator("table.diff")
    expect(diff).to_contain_text("/new-path")
    expect(diff).to_contain_text("/old-path")
    page.get_by_label("Comment").fill("clients broke")
    page.get_by_role("button", name=f"Yes, roll back to version {good}").click()
    expect(page.locator(".messagelist")).to_contain_text(f"Rolled back to version {good}")
    assert eventually(lambda: served_by(client, "/old-path/x") == "up-a")
    assert served_by(client, "/new-path/x") is None

    breadcrumbs = page.get_by_role("navigation", name="Breadcrumbs")
    breadcrumbs.get_by_role("link", name="Configuration timeline").click()
    expect(page.locator("#result_list")).to_contain_text(f"Rollback to v{good}: clients broke")
    assert_fits_the_width(page)
    keep_screenshot(page, "timeline")

"""Every feature is at most two clicks from the admin index: the route tester, the timeline
and a route's page are reached by following links, never by typing an address."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from accounts.models import User
from tests.browser.conftest import assert_fits_the_width, log_in
from tests.conftest import make_route, make_service, publish

pytestmark = pytest.mark.django_db(transaction=True)


def back_to_the_index(page: Page) -> None:
    page.get_by_role("link", name="Home").click()
    expect(page.get_by_role("heading", name="Site administration")).to_be_visible()


def test_the_tester_the_timeline_and_a_route_are_two_clicks_from_the_index(
    page: Page, admin: User
) -> None:
    make_route(make_service("users", "http://127.0.0.1:9"), "/users", name="users")
    publish()
    log_in(page, admin)
    assert_fits_the_width(page)

    page.get_by_role("link", name="Route tester").click()
    expect(page.get_by_role("heading", name="Route tester")).to_be_visible()

    back_to_the_index(page)
    page.get_by_role("link", name="Configuration timeline").click()
    expect(page.get_by_role("heading", name="Configuration timeline")).to_be_visible()

    back_to_the_index(page)
    page.get_by_role("link", name="Routes", exact=True).click()
    expect(page.get_by_role("heading", name="Select route to change")).to_be_visible()
    assert_fits_the_width(page)
    page.locator("#result_list").get_by_role("link", name="users", exact=True).click()
    expect(page.get_by_label("Path")).to_have_value("/users")

"""The browser tests' cast: Debian's Chromium driven by Playwright against the live gateway
(`gateway` in tests/conftest.py serves the admin and the proxy in one ASGI app), a 1280x800 page,
users who log in through the admin's own form, and the checks every journey repeats.

Chromium is /usr/bin/chromium (PORTIER_CHROMIUM names another), never a browser Playwright
downloads. When it cannot start, every test here fails with the reason: a browser test that
skips proves nothing (`.ci/run` installs Chromium). PORTIER_SCREENSHOTS=<dir> keeps the README's
screenshots (dashboard.png, tester.png, timeline.png); a failing test leaves a screenshot of its
page in its tmp_path, named in the failure's report.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import Group, Permission
from playwright.sync_api import Browser, Error, Page, expect, sync_playwright

from accounts.models import User
from tests.servers import ServerThread

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu"]
WIDTH, HEIGHT = 1280, 800
PASSWORD = "correct horse battery staple"

# The gateway runs in a thread of this process: a page seldom waits long, a cold one may.
expect.set_options(timeout=10_000)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test, so `page` knows at teardown whether it failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="package")
def browser(gateway: ServerThread) -> Iterator[Browser]:
    """One Chromium for the package (a context per test keeps them apart). After `gateway`,
    whose database setup must run before Playwright starts (below)."""
    executable = os.environ.get("PORTIER_CHROMIUM", CHROMIUM)
    # Playwright's sync API marks an asyncio loop as running in this thread from start() to
    # stop(), and Django then refuses every ORM call made here (SynchronousOnlyOperation). The
    # calls are the tests' own, synchronous, between browser steps, with nothing else on the
    # loop: allowed for exactly that span, and for no test outside this package.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    try:
        try:
            chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except Error as exc:
            problem = exc.message.splitlines()[0]
        else:
            problem = ""
        if problem:
            pytest.fail(
                f"Chromium did not start from {executable}, so the browser tests cannot run: "
                f"{problem}\nInstall Debian's Chromium (sudo apt-get install chromium) or point "
                "PORTIER_CHROMIUM at a Chromium binary.",
                pytrace=False,
            )
        yield chromium
        chromium.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(
    browser: Browser, gateway: ServerThread, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Page]:
    """A fresh 1280x800 page on the gateway (relative URLs are the gateway's)."""
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT}, base_url=gateway.url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        shot = tmp_path / "failure.png"
        with contextlib.suppress(Error):  # a crashed page has none to give: the failure stands
            page.screenshot(path=shot, full_page=True)
            print(f"The page when the test failed: {shot} ({page.url})")
    context.close()


@pytest.fixture
def admin(db: None) -> User:
    """A superuser who logs in with PASSWORD."""
    return User.objects.create_superuser("ada", email="ada@example.com", password=PASSWORD)


@pytest.fixture
def auditor(db: None) -> User:
    """A staff user in the Auditor group, who logs in with PASSWORD. The group and its view
    permissions come from audit's migrations, which a transactional test's flush undoes: they
    are made again here, as the migrations make them (every view permission of the audit app)."""
    group, _ = Group.objects.get_or_create(name="Auditor")
    group.permissions.add(
        *Permission.objects.filter(content_type__app_label="audit", codename__startswith="view_")
    )
    user = User.objects.create_user(
        "audrey", email="audrey@example.com", password=PASSWORD, is_staff=True
    )
    user.groups.add(group)
    return user


def log_in(page: Page, user: User) -> None:
    """Through the admin's login form, as a person does; ends on the admin index."""
    page.goto("/admin/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#user-tools")).to_contain_text(user.username)


def assert_fits_the_width(page: Page) -> None:
    """No horizontal scrolling at 1280 pixels: the page's content fits the window. Call it once
    the page shows what the test expects of it: a click only starts the navigation."""
    page.wait_for_load_state("load")  # its stylesheets too: they decide the width
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= WIDTH, f"{page.url} scrolls sideways: {width} px wide in a {WIDTH} px window"


def keep_screenshot(page: Page, name: str) -> None:
    """The whole page as PORTIER_SCREENSHOTS/<name>.png, when that directory is asked for."""
    folder = os.environ.get("PORTIER_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=Path(folder) / f"{name}.png", full_page=True)


def served_by(client: httpx.Client, path: str) -> str | None:
    """The upstream that answered `path` through the gateway (None: not a 200)."""
    response = client.get(path)
    return response.headers.get("x-upstream") if response.status_code == 200 else None


def eventually(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Whether `check` holds within `seconds`: the running gateway loads a saved configuration
    within about a second, not at once."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()

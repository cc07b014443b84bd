"""The configuration timeline in the admin (routing.admin_timeline): an admin form save is a
version by its user, the timeline, a version's page with its diff and "compare with", and a
rollback confirmed on its own page and served by the running gateway."""

from __future__ import annotations

import html

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from accounts.models import User
from routing.models import ConfigRevision, ConfigVersion, Route
from tests.conftest import make_route, make_service, publish
from tests.routing.test_admin import route_form_of, served_within

pytestmark = pytest.mark.django_db(transaction=True)


def latest() -> ConfigRevision:
    return ConfigRevision.objects.order_by("-number").first()


def test_an_admin_form_save_is_one_version_by_its_user(admin_client, admin_user):
    route = make_route(make_service("users", "http://127.0.0.1:9"), "/users", name="users")
    count = ConfigRevision.objects.count()
    data = route_form_of(route, path="/people")
    response = admin_client.post(f"/admin/routing/route/{route.pk}/change/", data)
    assert response.status_code == 302
    assert ConfigRevision.objects.count() == count + 1
    revision = latest()
    assert (revision.source, revision.author, revision.author_name) == (
        "admin",
        admin_user,
        admin_user.username,
    )
    assert revision.summary == "changed routes/users (path)"
    assert revision.number == ConfigVersion.objects.get().number


def test_the_author_of_an_admin_save_says_why_afterwards_on_the_versions_page(
    admin_client, admin_user
):
    route = make_route(make_service("users", "http://127.0.0.1:9"), "/users", name="users")
    admin_client.post(f"/admin/routing/route/{route.pk}/change/", route_form_of(route, path="/p"))
    number = latest().number
    page = admin_client.get(f"/admin/routing/configrevision/{number}/change/").content.decode()
    assert 'id="version-comment"' in page

    saved = admin_client.post(
        f"/admin/routing/configrevision/{number}/comment/", {"comment": " moved to /p for v2 "}
    )

    assert saved.status_code == 302
    assert ConfigRevision.objects.get(pk=number).comment == "moved to /p for v2"
    timeline = admin_client.get("/admin/routing/configrevision/").content.decode()
    assert "moved to /p for v2" in timeline
    viewer = User.objects.create_user("viewer", password="pw-9x-long", is_staff=True)
    other = Client()
    other.force_login(viewer)
    refused = other.post(f"/admin/routing/configrevision/{number}/comment/", {"comment": "x"})
    assert refused.status_code == 403
    assert ConfigRevision.objects.get(pk=number).comment == "moved to /p for v2"


def test_the_index_links_the_timeline_which_lists_each_version(admin_client):
    make_route(make_service("users", "http://127.0.0.1:9"), "/users", name="users")
    index = admin_client.get("/admin/").content.decode()
    assert "/admin/routing/configrevision/" in index and "Configuration timeline" in index
    page = admin_client.get("/admin/routing/configrevision/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "<h1>Configuration timeline</h1>" in text
    assert f"v{latest().number}" in text and "added routes/users" in text


def test_a_version_page_shows_its_diff_and_compares_with_any_other(admin_client):
    route = make_route(make_service("users", "http://127.0.0.1:9"), "/users", name="users")
    first = ConfigRevision.objects.order_by("number").first().number
    route.path = "/people"
    route.save()
    number = latest().number
    page = admin_client.get(f"/admin/routing/configrevision/{number}/change/")
    assert page.status_code == 200
    text = html.unescape(page.content.decode())
    assert "routes/users" in text and "/people" in text and "(current)" in text
    assert "Roll back to this version" not in text  # it is the current one
    compared = admin_client.get(f"/admin/routing/configrevision/{number}/change/?against={first}")
    assert "added" in compared.content.decode() and f"since v{first}" in compared.content.decode()
    assert admin_client.get("/admin/routing/configrevision/999999/change/").status_code == 404


def test_a_confirmed_rollback_is_served_and_recorded(admin_client, admin_user, client, upstream):
    route = make_route(make_service("echo", upstream.url), "/old-path", name="echo")
    publish()
    good = latest().number
    route.path = "/new-path"
    route.save()
    holder_sees = lambda path: client.get(path).status_code == 200  # noqa: E731
    assert served_within(lambda: holder_sees("/new-path/x")) < 5

    page = admin_client.get(f"/admin/routing/configrevision/{good}/change/")
    assert "Roll back to this version" in page.content.decode()
    before = ConfigVersion.objects.get().number
    confirm = admin_client.get(f"/admin/routing/configrevision/{good}/rollback/")
    assert confirm.status_code == 200
    text = html.unescape(confirm.content.decode())
    assert "csrfmiddlewaretoken" in text and 'name="comment"' in text
    assert "/new-path" in text and "/old-path" in text  # what rolling back changes
    assert ConfigVersion.objects.get().number == before  # the page changed nothing

    done = admin_client.post(
        f"/admin/routing/configrevision/{good}/rollback/", {"comment": "clients broke"}
    )
    new = latest()
    assert done.status_code == 302
    assert done["Location"] == f"/admin/routing/configrevision/{new.number}/change/"
    assert (new.source, new.author, new.comment) == (
        "rollback",
        admin_user,
        f"Rollback to v{good}: clients broke",
    )
    assert Route.objects.get(name="echo").path == "/old-path"
    assert served_within(lambda: holder_sees("/old-path/x")) < 5


def test_a_rollback_that_no_longer_applies_is_shown_and_changes_nothing(admin_client):
    make_route(make_service("users", "http://127.0.0.1:9"), "/users", name="users")
    before = ConfigVersion.objects.get().number
    broken = ConfigRevision.objects.create(
        number=before + 1000,
        document={"version": 1, "routes": [{"name": "x", "service": "gone", "path": "/x"}]},
    )
    response = admin_client.post(f"/admin/routing/configrevision/{broken.number}/rollback/", {})
    assert response.status_code == 400
    assert "no longer applies" in response.content.decode()
    assert ConfigVersion.objects.get().number == before
    assert list(Route.objects.values_list("name", flat=True)) == ["users"]


def test_an_auditor_sees_no_timeline_and_cannot_roll_back(client):
    make_service("users", "http://127.0.0.1:9")
    number = latest().number
    auditor = User.objects.create_user("olga", email="olga@example.com", is_staff=True)
    auditor.groups.add(Group.objects.get_or_create(name="Auditor")[0])
    browser = Client()
    browser.force_login(auditor)
    assert browser.get("/admin/routing/configrevision/").status_code == 403
    assert browser.get(f"/admin/routing/configrevision/{number}/change/").status_code == 403
    refused = browser.post(f"/admin/routing/configrevision/{number}/rollback/", {})
    assert refused.status_code == 403
    assert ConfigRevision.objects.count() == 2

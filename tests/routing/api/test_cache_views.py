"""A route's response cache in the three views of the configuration: the declarative document
(`cache`, exported when set, refused with the path of the bad key; `cache_generation` is never
part of it), the management API (read and write `cache`, `cache_generation` read-only, and
POST /admin/api/routes/{name}/purge-cache), and the admin (the route page's "Response cache"
section, its purge button and the route list's "Purge cached answers" action). A purge bumps the
generation, publishes a new configuration version and is recorded in the history with who did it.
"""

from __future__ import annotations

import copy
import html
import re
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client as DjangoClient

from accounts.models import User
from routing.api.document import (
    DocumentInvalid,
    document_apply,
    document_dump,
    document_export,
    document_load,
)
from routing.config.holder import holder
from routing.models import ConfigVersion, Route, Service
from tests.conftest import make_route, make_service, publish
from tests.routing.api.test_management_api import bearer, error_code
from tests.routing.test_admin import route_form_of

# The gateway's threads read users and configuration: the test data must be committed.
pytestmark = pytest.mark.django_db(transaction=True)

CACHE = {
    "ttl": 60,
    "vary_headers": ["Accept-Language"],
    "vary_query": ["page", "size"],
    "per_user": False,
    "max_entry_bytes": 1048576,
    "stale_if_error": 300,
}


def version() -> int:
    return ConfigVersion.objects.get().number


def build_cached_configuration() -> None:
    service = make_service("users", "http://127.0.0.1:9")
    make_route(service, "/api/v1/users", name="users", cache=CACHE)
    make_route(service, "/api/v1/short", name="short", cache={"ttl": 5})
    make_route(service, "/api/v1/plain", name="plain")


def empty_database() -> None:
    Route.objects.all().delete()
    Service.objects.all().delete()


def rows() -> list[Any]:
    return list(Route.objects.order_by("pk").values())


# --- The document --------------------------------------------------------------------------


def test_the_document_round_trips_a_cache_byte_for_byte():
    build_cached_configuration()
    exported = document_dump(document_export())

    empty_database()
    document_apply(document_load(exported))

    assert document_dump(document_export()) == exported
    assert Route.objects.get(name="users").cache == CACHE
    assert Route.objects.get(name="short").cache == {"ttl": 5}
    assert Route.objects.get(name="plain").cache is None


def test_the_document_exports_a_cache_when_set_and_never_the_generation():
    build_cached_configuration()
    Route.objects.filter(name="users").update(cache_generation=7)

    routes = {r["name"]: r for r in document_export()["routes"]}

    assert routes["users"]["cache"] == CACHE
    assert list(routes["users"])[-1] == "cache"  # after the edge options
    assert routes["short"]["cache"] == {"ttl": 5}
    assert "cache" not in routes["plain"]  # null: left out
    assert not any("cache_generation" in r for r in routes.values())


def test_importing_an_export_leaves_the_generation_and_publishes_nothing():
    build_cached_configuration()
    Route.objects.filter(name="users").update(cache_generation=3)
    publish()
    before, exported = version(), document_export()

    changes = document_apply(copy.deepcopy(exported))

    assert changes.is_empty()
    assert version() == before
    assert Route.objects.get(name="users").cache_generation == 3


def test_a_changed_cache_shows_in_a_dry_run_and_is_applied_leaving_the_generation():
    build_cached_configuration()
    Route.objects.filter(name="users").update(cache_generation=4)
    document = document_export()
    users = next(r for r in document["routes"] if r["name"] == "users")
    users["cache"] = {"ttl": 30}
    plain = next(r for r in document["routes"] if r["name"] == "plain")
    plain["cache"] = {"ttl": 10, "per_user": True}
    before = rows()

    dry = document_apply(copy.deepcopy(document), dry_run=True)

    assert ("routes/users", "cache", CACHE, {"ttl": 30}) in dry.changed
    assert ("routes/plain", "cache", None, {"ttl": 10, "per_user": True}) in dry.changed
    assert rows() == before
    document_apply(document)
    users_row = Route.objects.get(name="users")
    assert (users_row.cache, users_row.cache_generation) == ({"ttl": 30}, 4)
    assert Route.objects.get(name="plain").cache == {"ttl": 10, "per_user": True}


def test_an_explicit_null_cache_turns_caching_off():
    build_cached_configuration()
    document = document_export()
    next(r for r in document["routes"] if r["name"] == "users")["cache"] = None

    document_apply(document)

    assert Route.objects.get(name="users").cache is None


def good_document() -> dict[str, Any]:
    return {
        "version": 1,
        "services": [{"name": "users", "targets": [{"url": "http://127.0.0.1:3002"}]}],
        "routes": [
            {"name": "plain", "service": "users", "path": "/plain"},
            {"name": "cached", "service": "users", "path": "/cached", "cache": {"ttl": 60}},
        ],
    }


BAD_CACHES = {
    "a cache without ttl": ({"vary_query": ["page"]}, "routes[1].cache: ttl: required"),
    "a ttl of 0": ({"ttl": 0}, "routes[1].cache: ttl: expected whole seconds from 1 to"),
    "a ttl written as text": ({"ttl": "60"}, "routes[1].cache: ttl: expected whole seconds"),
    "an unknown key": ({"ttl": 60, "vary": ["a"]}, "routes[1].cache: vary: unknown key"),
    "a bad header name": (
        {"ttl": 60, "vary_headers": ["Accept Language"]},
        "routes[1].cache: vary_headers: 'Accept Language' is not a header name",
    ),
    "per_user written as text": (
        {"ttl": 60, "per_user": "yes"},
        "routes[1].cache: per_user: expected true or false",
    ),
    "an entry too large": (
        {"ttl": 60, "max_entry_bytes": 10**9},
        "routes[1].cache: max_entry_bytes: expected bytes from 1 to",
    ),
    "a negative stale_if_error": (
        {"ttl": 60, "stale_if_error": -1},
        "routes[1].cache: stale_if_error: expected whole seconds from 0 to",
    ),
    "a cache that is true": (True, "routes[1].cache: expected a mapping of response cache"),
    "a cache that is a list": ([60], "routes[1].cache: expected a mapping of response cache"),
    "a cache holding a date": (
        document_load("{ttl: 60, since: 2024-01-01}"),
        "routes[1].cache: expected a mapping of response cache settings (JSON data",
    ),
}


@pytest.mark.parametrize("case", BAD_CACHES, ids=list(BAD_CACHES))
def test_the_document_refuses_a_bad_cache_with_its_path_and_changes_nothing(case):
    cache, expected = BAD_CACHES[case]
    build_cached_configuration()
    publish()
    before, published = rows(), version()
    document = good_document()
    document["routes"][1]["cache"] = cache

    with pytest.raises(DocumentInvalid) as refused:
        document_apply(document, prune=True)

    assert any(e.startswith(expected) for e in refused.value.errors), refused.value.errors
    assert rows() == before
    assert version() == published


def test_the_document_does_not_accept_a_generation():
    document = good_document()
    document["routes"][1]["cache_generation"] = 9

    with pytest.raises(DocumentInvalid) as refused:
        document_apply(document)

    assert "routes[1].cache_generation: unknown field" in refused.value.errors
    assert not Route.objects.exists()


# --- The management API --------------------------------------------------------------------


@pytest.fixture
def root() -> User:
    return User.objects.create_superuser("root", email="r@example.com", password="x")


def staff_with(*codenames: str) -> dict[str, str]:
    user = User.objects.create_user("staff", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="routing", codename__in=codenames)
    )
    return bearer(user)


def test_the_api_reads_and_writes_a_routes_cache(client, root):
    make_service("users", "http://127.0.0.1:9")
    admin = bearer(root)
    route = {"name": "users", "service": "users", "path": "/api/v1/users", "cache": CACHE}

    created = client.post("/admin/api/routes/", json=route, headers=admin)
    read = client.get("/admin/api/routes/users", headers=admin).json()

    assert created.status_code == 201, created.text
    assert (read["cache"], read["cache_generation"]) == (CACHE, 0)
    changed = client.patch(
        "/admin/api/routes/users", json={"cache": {"ttl": 5}, "cache_generation": 99}, headers=admin
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["cache"], changed.json()["cache_generation"]) == ({"ttl": 5}, 0)
    assert Route.objects.get(name="users").cache_generation == 0  # read-only: ignored
    off = client.patch("/admin/api/routes/users", json={"cache": None}, headers=admin)
    assert off.status_code == 200, off.text
    assert Route.objects.get(name="users").cache is None


@pytest.mark.parametrize(
    ("cache", "expected"),
    [
        ({"vary_query": ["page"]}, "ttl: required"),
        ({"ttl": 0}, "ttl: expected whole seconds"),
        ({"ttl": 60, "vary": []}, "vary: unknown key"),
    ],
)
def test_the_api_refuses_a_bad_cache_with_the_models_message(client, root, cache, expected):
    make_route(make_service("users", "http://127.0.0.1:9"), "/users", name="users")
    before = rows()

    answer = client.patch("/admin/api/routes/users", json={"cache": cache}, headers=bearer(root))

    assert answer.status_code == 400, answer.text
    assert error_code(answer) == "invalid_request"
    assert expected in str(answer.json()), answer.json()
    assert rows() == before


@pytest.mark.parametrize("slash", ["", "/"])
def test_purging_bumps_the_generation_publishes_and_records_the_caller(client, root, slash):
    make_route(make_service("users", "http://127.0.0.1:9"), "/users", name="users", cache=CACHE)
    publish()
    before = version()
    namespace = holder.current.routes[0].cache.namespace

    answer = client.post(f"/admin/api/routes/users/purge-cache{slash}", headers=bearer(root))

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"route": "users", "cache_generation": 1}
    assert Route.objects.get(name="users").cache_generation == 1
    assert version() == before + 1
    record = Route.history.filter(name="users").latest("history_date")
    assert record.cache_generation == 1
    assert record.history_user == root
    holder.refresh()
    assert holder.current.routes[0].cache.namespace != namespace  # old entries unreachable
    again = client.post(f"/admin/api/routes/users/purge-cache{slash}", headers=bearer(root))
    assert again.json() == {"route": "users", "cache_generation": 2}


def test_purging_an_unknown_route_is_a_404_in_the_apis_shape(client, root):
    answer = client.post("/admin/api/routes/nobody/purge-cache", headers=bearer(root))

    assert answer.status_code == 404, answer.text
    assert error_code(answer) == "not_found"


def test_purging_needs_the_change_permission_on_routes(client):
    make_route(make_service("users", "http://127.0.0.1:9"), "/users", name="users", cache=CACHE)
    publish()
    before = version()

    # Adding routes is what a POST needs elsewhere; a purge changes one.
    viewer = staff_with("view_route", "add_route")
    refused = client.post("/admin/api/routes/users/purge-cache", headers=viewer)
    assert refused.status_code == 403, refused.text
    assert error_code(refused) == "permission_denied"
    assert Route.objects.get(name="users").cache_generation == 0
    assert version() == before
    User.objects.filter(username="staff").delete()

    editor = staff_with("view_route", "change_route")
    allowed = client.post("/admin/api/routes/users/purge-cache", headers=editor)
    assert allowed.status_code == 200, allowed.text
    assert Route.objects.get(name="users").cache_generation == 1


def test_an_anonymous_purge_is_refused(client):
    make_route(make_service("users", "http://127.0.0.1:9"), "/users", name="users", cache=CACHE)

    answer = client.post("/admin/api/routes/users/purge-cache")

    assert answer.status_code == 401, answer.text
    assert Route.objects.get(name="users").cache_generation == 0


def test_the_purge_endpoint_is_in_the_schema(client, root):
    schema = client.get("/admin/api/schema/?format=json", headers=bearer(root)).json()

    operation = schema["paths"]["/admin/api/routes/{name}/purge-cache/"]["post"]
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/CachePurge"}
    assert set(schema["components"]["schemas"]["CachePurge"]["properties"]) == {
        "route",
        "cache_generation",
    }
    route = schema["components"]["schemas"]["Route"]["properties"]
    assert route["cache_generation"]["readOnly"] is True
    assert "cache" in route


# --- The admin -----------------------------------------------------------------------------


def test_the_route_page_has_a_response_cache_section(admin_client):
    route = make_route(
        make_service("users", "http://127.0.0.1:9"), "/users", name="users", cache=CACHE
    )
    Route.objects.filter(pk=route.pk).update(cache_generation=5)

    page = admin_client.get(f"/admin/routing/route/{route.pk}/change/").content.decode()

    section = re.search(r"<h2[^>]*>Response cache</h2>(.*?)</fieldset>", page, re.S)
    assert section is not None
    cache = section.group(1)
    assert re.search(r'<textarea[^>]*name="cache"[^>]*monospace', cache)
    assert 'name="cache_generation"' not in cache  # shown, not editable
    assert re.search(r"Cache generation:</label>\s*<div class=\"readonly\">5</div>", cache)
    assert "Cache hit ratio (last 15 min)" in cache
    assert "Purge cached answers" in page  # the button of a caching route


def test_the_route_form_saves_and_validates_the_cache(admin_client):
    route = make_route(make_service("users", "http://127.0.0.1:9"), "/users", name="users")
    url = f"/admin/routing/route/{route.pk}/change/"

    refused = admin_client.post(url, route_form_of(route, cache='{"ttl": 0}'))
    assert refused.status_code == 200
    assert "ttl: expected whole seconds" in html.unescape(refused.content.decode())
    assert Route.objects.get(pk=route.pk).cache is None

    saved = admin_client.post(url, route_form_of(route, cache='{"ttl": 60}'))
    assert saved.status_code == 302, saved.content.decode()[:2000]
    assert Route.objects.get(pk=route.pk).cache == {"ttl": 60}
    cleared = admin_client.post(url, route_form_of(route, cache=""))
    assert cleared.status_code == 302
    assert Route.objects.get(pk=route.pk).cache is None


def test_the_list_action_purges_the_selected_routes(admin_client):
    service = make_service("users", "http://127.0.0.1:9")
    one = make_route(service, "/one", name="one", cache=CACHE)
    two = make_route(service, "/two", name="two", cache={"ttl": 5})
    make_route(service, "/three", name="three", cache={"ttl": 5})
    publish()
    before = version()

    answer = admin_client.post(
        "/admin/routing/route/",
        {"action": "purge_cached_answers", "_selected_action": [one.pk, two.pk]},
        follow=True,
    )

    assert answer.status_code == 200
    assert "Purged the cached answers of 2 routes" in answer.content.decode()
    generations = dict(Route.objects.values_list("name", "cache_generation"))
    assert generations == {"one": 1, "two": 1, "three": 0}
    assert version() == before + 1  # one transaction, one version
    record = Route.history.filter(name="one").latest("history_date")
    assert (record.cache_generation, record.history_user.username) == (1, "admin")


def test_the_change_page_button_purges_the_route(admin_client):
    route = make_route(
        make_service("users", "http://127.0.0.1:9"), "/users", name="users", cache=CACHE
    )
    url = f"/admin/routing/route/{route.pk}/purge-cache/"

    assert admin_client.get(url).status_code == 405  # a link followed by accident does nothing
    answer = admin_client.post(url, follow=True)

    assert answer.redirect_chain[-1][0] == f"/admin/routing/route/{route.pk}/change/"
    assert "Purged the cached answers of 1 route" in answer.content.decode()
    assert Route.objects.get(pk=route.pk).cache_generation == 1
    assert admin_client.post("/admin/routing/route/999999/purge-cache/").status_code == 404


def test_the_purge_action_and_button_need_the_change_permission():
    route = make_route(
        make_service("users", "http://127.0.0.1:9"), "/users", name="users", cache=CACHE
    )
    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_route"))
    browser = DjangoClient()
    browser.force_login(viewer)

    page = browser.get(f"/admin/routing/route/{route.pk}/change/").content.decode()
    listing = browser.get("/admin/routing/route/").content.decode()

    assert "Purge cached answers" not in page
    assert "purge_cached_answers" not in listing
    assert browser.post(f"/admin/routing/route/{route.pk}/purge-cache/").status_code == 403
    assert Route.objects.get(pk=route.pk).cache_generation == 0

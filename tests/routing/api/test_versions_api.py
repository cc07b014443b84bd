"""The configuration timeline (routing.api.revisions) and its management API, on the running
gateway: every write path (admin form, API, document import) is one version naming its author
and source, a republish of the same data is none, each version's diff, compare any two, and a
rollback that the gateway serves, recorded as a new version, never touching API keys, refused
whole when the old document no longer applies, and only for those who may apply a document."""

from __future__ import annotations

import yaml
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.core.management import call_command

from accounts.models import ApiKey, User
from accounts.services import api_key_issue
from routing.api.document import document_apply
from routing.config.holder import holder
from routing.config.publish import VERSION_KEY, config_publish
from routing.models import ConfigRevision, ConfigVersion, Route, Service
from tests.conftest import make_route, make_service, publish
from tests.routing.api import test_management_api as management
from tests.routing.api.test_management_api import DOCUMENT, YAML, bearer, error_code, eventually

pytestmark = management.pytestmark
admin = management.admin  # fixtures: a superuser's and an auditor's bearer headers
auditor = management.auditor


def latest() -> ConfigRevision:
    return ConfigRevision.objects.order_by("-number").first()


def test_each_publish_that_changes_the_configuration_is_one_version(client, admin):
    make_service("users", "http://127.0.0.1:9")  # two commits outside a request: the service,
    first = latest()  # then its target
    assert first.number == ConfigVersion.objects.get().number
    assert first.source == "system" and first.author is None
    summaries = ConfigRevision.objects.order_by("number").values_list("summary", flat=True)
    assert list(summaries) == ["added services/users", "changed services/users (targets)"]

    config_publish()  # the same data again: a new version number, no timeline entry
    assert latest().number == first.number
    cache.delete(VERSION_KEY)  # a cache that lost the version: the holder rebuilds it
    holder.refresh()
    assert ConfigVersion.objects.get().number > first.number + 1
    assert ConfigRevision.objects.count() == 2


def test_an_api_write_is_a_version_by_the_caller(client, admin):
    response = client.post(
        "/admin/api/services/",
        json={"name": "users", "targets": [{"url": "http://127.0.0.1:9"}]},
        headers=admin,
    )
    assert response.status_code == 201, response.text
    revision = latest()
    assert (revision.source, revision.author_name) == ("api", "root")
    assert revision.number == ConfigVersion.objects.get().number


def test_a_document_put_is_a_version_by_the_caller_with_its_comment(client, admin):
    response = client.put(
        "/admin/api/config?comment=release%2042", content=DOCUMENT, headers=admin | YAML
    )
    assert response.status_code == 200, response.text
    revision = latest()
    assert (revision.source, revision.author_name, revision.comment) == (
        "api",
        "root",
        "release 42",
    )
    assert "added services/users" in revision.summary


def test_an_import_is_a_version_by_its_actor_or_by_nobody_from_the_command(tmp_path):
    kim = User.objects.create_superuser("kim", email="kim@example.com", password="pw-9x-long")
    document_apply(yaml.safe_load(DOCUMENT), actor=kim)
    assert (latest().source, latest().author, latest().author_name) == ("import", kim, "kim")

    changed = tmp_path / "config.yaml"
    changed.write_text(DOCUMENT.replace("/api/v1/users", "/api/v2/users"))
    call_command("portier_import", str(changed))
    assert (latest().source, latest().author) == ("import", None)
    assert latest().summary == "changed routes/users (path)"
    assert ConfigRevision.objects.count() == 2


def test_the_api_lists_versions_newest_first_and_answers_one_with_its_diff(client, admin):
    service = make_service("users", "http://127.0.0.1:9")
    route = make_route(service, "/users", name="users")
    v_route = latest().number
    route.path = "/people"
    route.save()
    v_path = latest().number

    listed = client.get("/admin/api/versions/", headers=admin)
    assert listed.status_code == 200, listed.text
    results = listed.json()["results"]
    assert [r["number"] for r in results][:2] == [v_path, v_route]
    assert set(results[0]) == {"number", "created_at", "author", "source", "comment", "summary"}
    assert results[0]["summary"] == "changed routes/users (path)"

    one = client.get(f"/admin/api/versions/{v_path}", headers=admin).json()
    assert one["against"] == v_route
    assert one["changes"] == {
        "added": [],
        "changed": [{"object": "routes/users", "field": "path", "old": "/users", "new": "/people"}],
        "removed": [],
    }
    assert one["document"]["routes"][0]["path"] == "/people"
    assert "api_keys" not in one["document"]

    first = ConfigRevision.objects.order_by("number").first().number
    compared = client.get(f"/admin/api/versions/{v_path}?against={first}", headers=admin).json()
    assert compared["against"] == first
    assert compared["changes"]["added"] == ["routes/users"]

    assert client.get("/admin/api/versions/999999", headers=admin).status_code == 404
    bad = client.get(f"/admin/api/versions/{v_path}?against=999999", headers=admin)
    assert bad.status_code == 400 and error_code(bad) == "invalid_request"


def test_a_rollback_is_served_and_is_a_new_version_with_its_author_and_comment(
    client, admin, upstream
):
    service = make_service("echo", upstream.url)
    make_route(service, "/old-path", name="echo")
    publish()
    good = latest().number
    assert eventually(lambda: client.get("/old-path/x").status_code == 200)
    route = {"name": "echo", "service": "echo", "path": "/new-path"}
    assert client.put("/admin/api/routes/echo", json=route, headers=admin).status_code == 200
    make_service("extra", "http://127.0.0.1:9")
    assert eventually(lambda: client.get("/new-path/x").status_code == 200)

    response = client.post(
        f"/admin/api/versions/{good}/rollback",
        json={"comment": "new path broke clients"},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["changed"] is True
    assert body["changes"]["removed"] == ["services/extra"]
    version = body["version"]
    assert version["number"] == ConfigVersion.objects.get().number == latest().number
    assert (version["source"], version["author"]) == ("rollback", "root")
    assert version["comment"] == f"Rollback to v{good}: new path broke clients"
    assert latest().document == ConfigRevision.objects.get(number=good).document
    assert Route.objects.get(name="echo").history.first().history_user.username == "root"
    assert not Service.objects.filter(name="extra").exists()
    assert eventually(lambda: client.get("/old-path/x").status_code == 200)
    assert client.get("/new-path/x").status_code == 404

    again = client.post(f"/admin/api/versions/{good}/rollback", headers=admin)
    assert again.status_code == 200
    assert again.json() == {
        "changed": False,
        "version": None,
        "changes": {"added": [], "changed": [], "removed": []},
    }


def test_a_rollback_never_touches_api_keys(client, admin):
    owner = User.objects.create_user("ann", email="ann@example.com")
    make_service("users", "http://127.0.0.1:9")
    before_keys = latest().number
    kept, _secret = api_key_issue(owner=owner, name="ci")
    make_service("orders", "http://127.0.0.1:9")

    response = client.post(f"/admin/api/versions/{before_keys}/rollback", headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["changes"]["removed"] == ["services/orders"]
    kept.refresh_from_db()
    assert kept.revoked_at is None
    assert list(ApiKey.objects.values_list("name", flat=True)) == ["ci"]


def test_a_rollback_to_a_document_that_no_longer_applies_changes_nothing(client, admin):
    make_route(make_service("users", "http://127.0.0.1:9"), "/users", name="users")
    before = ConfigVersion.objects.get().number
    broken = ConfigRevision.objects.create(
        number=before + 1000,  # not a real publish: only to hold a bad document
        source="system",
        document={"version": 1, "routes": [{"name": "x", "service": "gone", "path": "/x"}]},
    )
    response = client.post(f"/admin/api/versions/{broken.number}/rollback", headers=admin)
    assert response.status_code == 400
    assert error_code(response) == "invalid_request"
    errors = response.json()["error"]["fields"]["document"]
    assert errors[0] == f"Version {broken.number} no longer applies."
    assert any(error.startswith("routes[0].service") for error in errors), errors
    assert ConfigVersion.objects.get().number == before
    assert list(Route.objects.values_list("name", flat=True)) == ["users"]
    assert client.post("/admin/api/versions/999999/rollback", headers=admin).status_code == 404


def test_reading_needs_the_document_view_permissions_and_rollback_the_apply_ones(client, auditor):
    make_service("users", "http://127.0.0.1:9")
    number = latest().number
    for path in ("/admin/api/versions/", f"/admin/api/versions/{number}"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=auditor).status_code == 403
    reader = User.objects.create_user("rita", email="rita@example.com")
    reader.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="routing", codename__startswith="view_")
    )
    headers = bearer(reader)
    assert client.get("/admin/api/versions/", headers=headers).status_code == 200
    assert client.get(f"/admin/api/versions/{number}", headers=headers).status_code == 200
    refused = client.post(f"/admin/api/versions/{number}/rollback", headers=headers)
    assert refused.status_code == 403
    assert client.post(f"/admin/api/versions/{number}/rollback", headers=auditor).status_code == 403


def test_publishing_the_empty_configuration_of_a_fresh_gateway_adds_no_version():
    config_publish()  # a cache rebuilt before anything was configured
    cache.delete(VERSION_KEY)
    holder.refresh()
    assert ConfigVersion.objects.get().number >= 2
    assert not ConfigRevision.objects.exists()

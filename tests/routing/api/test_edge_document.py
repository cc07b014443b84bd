"""The edge options in the declarative document: a route's transform, CORS, security headers,
HTTPS redirect, compression and IP lists, and the gateway-wide `defaults:` mapping. They round
trip byte for byte, show in a dry run, are refused with the path of the bad block (nothing
changed), and `defaults` left out leaves the gateway defaults alone unless pruning."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from accounts.models import User
from routing.api.document import (
    DocumentInvalid,
    document_apply,
    document_dump,
    document_export,
    document_load,
)
from routing.config.holder import holder
from routing.models import ConfigVersion, GatewayDefaults, Route, Service
from tests.conftest import make_route, make_service, publish, received

TRANSFORM = {
    "request": {
        "headers": {
            "set": {"X-Tenant": "acme"},
            "add": {"X-Caller": "$user_id"},
            "remove": ["X-Debug"],
            "rename": {"X-Old": "X-New"},
        },
        "query": {"set": {"api_version": "2"}, "remove": ["debug"], "rename": {"q": "search"}},
        "body": {"set": {"source": "gateway", "count": 1}, "remove": ["internal"]},
    },
    "response": {"headers": {"set": {"Cache-Control": "no-store"}, "remove": ["Server"]}},
}
APP_CORS = {"origins": ["https://app.example.com"], "credentials": True, "max_age": 600}


def build_edge_configuration() -> None:
    """Routes using every edge option, and gateway defaults away from the built-in values."""
    service = make_service("users", "http://127.0.0.1:9")
    make_route(
        service,
        "/api/v1/users",
        name="users",
        transform=TRANSFORM,
        cors=False,
        security_headers={"frame_options": "SAMEORIGIN", "override": True},
        https_redirect=False,
        compression=True,
        ip_allow=["10.0.0.0/8", "192.0.2.7"],
        ip_deny=["10.9.0.0/16"],
    )
    make_route(service, "/api/v1/open", name="open", cors=APP_CORS, https_redirect=True)
    make_route(service, "/api/v1/plain", name="plain")
    defaults = GatewayDefaults.load()
    defaults.cors = {"origins": ["https://app.example.com"], "origin_patterns": []}
    defaults.security_headers = {"hsts_max_age": 0}
    defaults.compression = True
    defaults.compression_min_bytes = 2048
    defaults.full_clean()
    defaults.save()


def empty_database() -> None:
    Route.objects.all().delete()
    Service.objects.all().delete()
    GatewayDefaults.objects.all().delete()


def rows() -> list[Any]:
    """Every route and defaults value, to prove that nothing changed."""
    return [
        list(Route.objects.order_by("pk").values()),
        list(GatewayDefaults.objects.values()),
    ]


def defaults_values() -> dict[str, Any]:
    row = GatewayDefaults.current()
    return {
        "cors": row.cors,
        "security_headers": row.security_headers,
        "https_redirect": row.https_redirect,
        "compression": row.compression,
        "compression_min_bytes": row.compression_min_bytes,
    }


BUILT_IN = {
    "cors": None,
    "security_headers": {},
    "https_redirect": False,
    "compression": False,
    "compression_min_bytes": 1024,
}


# --- Export and round trip -----------------------------------------------------------------


@pytest.mark.django_db
def test_it_round_trips_the_edge_options_byte_for_byte():
    build_edge_configuration()
    exported = document_dump(document_export())

    empty_database()
    changes = document_apply(document_load(exported))

    assert document_dump(document_export()) == exported
    assert ("defaults", "compression", False, True) in changes.changed
    users = Route.objects.get(name="users")
    assert users.transform == TRANSFORM
    assert (users.cors, users.compression, users.https_redirect) == (False, True, False)
    assert users.ip_allow == ["10.0.0.0/8", "192.0.2.7"]
    assert Route.objects.get(name="plain").cors is None  # inherits
    assert GatewayDefaults.current().compression_min_bytes == 2048


@pytest.mark.django_db
def test_it_exports_the_options_as_written_and_leaves_inherited_ones_out():
    build_edge_configuration()

    document = document_export()

    assert list(document)[:2] == ["version", "defaults"]
    assert document["defaults"] == {
        "cors": {"origins": ["https://app.example.com"], "origin_patterns": []},
        "security_headers": {"hsts_max_age": 0},
        "compression": True,
        "compression_min_bytes": 2048,
    }
    routes = {route["name"]: route for route in document["routes"]}
    assert routes["users"]["cors"] is False
    assert routes["users"]["ip_deny"] == ["10.9.0.0/16"]
    assert routes["users"]["transform"] == TRANSFORM
    assert routes["open"]["cors"] == APP_CORS
    assert routes["plain"] == {"name": "plain", "service": "users", "path": "/api/v1/plain"}
    text = document_dump(document)
    assert "    cors: false\n" in text
    assert "    ip_allow: [10.0.0.0/8, 192.0.2.7]\n" in text


@pytest.mark.django_db
def test_an_untouched_gateway_exports_no_defaults_even_once_saved():
    assert "defaults" not in document_export()

    GatewayDefaults.load()  # saved, with the built-in values

    assert "defaults" not in document_export()


@pytest.mark.django_db(transaction=True)
def test_importing_an_export_changes_nothing_and_publishes_nothing():
    build_edge_configuration()
    publish()
    before_rows, before_history = rows(), GatewayDefaults.history.count()
    before_version = ConfigVersion.objects.get().number

    changes = document_apply(document_load(document_dump(document_export())), prune=True)

    assert changes.is_empty()
    assert rows() == before_rows
    assert GatewayDefaults.history.count() == before_history
    assert ConfigVersion.objects.get().number == before_version


@pytest.mark.django_db(transaction=True)
def test_an_import_publishes_the_defaults_and_routes_as_one_version_recorded_as_the_actor():
    make_service("users", "http://127.0.0.1:9")
    publish()
    before = ConfigVersion.objects.get().number
    ops = User.objects.create_superuser("ops", password="x")
    document = {
        "version": 1,
        "defaults": {"cors": APP_CORS},
        "routes": [
            {"name": "users", "service": "users", "path": "/users", "cors": False},
            {"name": "open", "service": "users", "path": "/open", "ip_deny": ["192.0.2.0/24"]},
        ],
    }

    document_apply(document, actor=ops)
    holder.refresh()  # serve the version the import published

    assert ConfigVersion.objects.get().number == before + 1
    assert GatewayDefaults.history.latest("history_date").history_user == ops
    served = {route.name: route for route in holder.current.routes}
    assert holder.current.edge.cors is not None
    assert holder.current.edge.cors.allows("https://app.example.com")
    assert served["users"].edge.cors is None  # false: no CORS on this route
    assert served["open"].edge.cors.allows("https://app.example.com")  # inherited
    assert not served["open"].edge.ip_rules.permits("192.0.2.10")


@pytest.mark.django_db
def test_an_imported_transform_is_applied_by_the_running_gateway(client, upstream):
    document = {
        "version": 1,
        "services": [{"name": "echo", "targets": [{"url": upstream.url}]}],
        "routes": [
            {
                "name": "echo",
                "service": "echo",
                "path": "/edge-doc",
                "transform": {"request": {"headers": {"set": {"X-Tenant": "acme"}}}},
            }
        ],
    }

    document_apply(document)
    publish()
    answer = client.get("/edge-doc/x")

    assert answer.status_code == 200
    assert ["x-tenant", "acme"] in received(upstream)[-1]["headers"]


# --- Dry run and prune ---------------------------------------------------------------------


@pytest.mark.django_db
def test_a_dry_run_shows_edge_and_defaults_changes_and_changes_nothing():
    build_edge_configuration()
    document = document_export()
    document["defaults"]["https_redirect"] = True
    del document["defaults"]["compression"]  # back to the built-in value
    plain = next(r for r in document["routes"] if r["name"] == "plain")
    plain["cors"] = False
    plain["ip_allow"] = ["10.0.0.0/8"]
    before = rows()

    changes = document_apply(document, dry_run=True)

    assert rows() == before
    assert ("defaults", "https_redirect", False, True) in changes.changed
    assert ("defaults", "compression", True, False) in changes.changed
    assert ("routes/plain", "cors", None, False) in changes.changed
    text = changes.as_text()
    assert "~ defaults.https_redirect: false -> true" in text
    assert "~ routes/plain.cors: null -> false" in text
    assert '~ routes/plain.ip_allow: [] -> ["10.0.0.0/8"]' in text


@pytest.mark.django_db
def test_a_changed_value_of_another_json_type_is_a_change():
    build_edge_configuration()
    document = document_export()
    users = next(r for r in document["routes"] if r["name"] == "users")
    users["transform"]["request"]["body"]["set"]["count"] = True  # was 1

    changes = document_apply(document)

    assert [(obj, key) for obj, key, _, _ in changes.changed] == [("routes/users", "transform")]
    assert Route.objects.get(name="users").transform["request"]["body"]["set"]["count"] is True


@pytest.mark.django_db
def test_without_prune_an_absent_defaults_leaves_the_gateway_defaults_alone():
    build_edge_configuration()
    before = defaults_values()
    document = document_export()
    del document["defaults"]

    changes = document_apply(document)

    assert changes.is_empty()
    assert defaults_values() == before


@pytest.mark.django_db
def test_with_prune_an_absent_defaults_resets_them_to_the_built_in_values():
    build_edge_configuration()
    document = document_export()
    del document["defaults"]

    changes = document_apply(document, prune=True)

    assert {key for obj, key, _, _ in changes.changed if obj == "defaults"} == {
        "cors",
        "security_headers",
        "compression",
        "compression_min_bytes",
    }
    assert defaults_values() == BUILT_IN
    assert "defaults" not in document_export()


@pytest.mark.django_db
def test_an_empty_defaults_mapping_resets_them_without_prune():
    build_edge_configuration()

    document_apply({"version": 1, "defaults": {}})

    assert defaults_values() == BUILT_IN
    assert Route.objects.count() == 3


# --- Bad blocks ----------------------------------------------------------------------------


def good_document() -> dict[str, Any]:
    return {
        "version": 1,
        "defaults": {"cors": APP_CORS},
        "services": [{"name": "users", "targets": [{"url": "http://127.0.0.1:3002"}]}],
        "routes": [
            {"name": "plain", "service": "users", "path": "/plain"},
            {"name": "users", "service": "users", "path": "/api/v1/users"},
            {"name": "edge", "service": "users", "path": "/edge", "cors": APP_CORS},
        ],
    }


def route_with(**fields: Any) -> Any:
    return lambda d: d["routes"][2].update(fields)


def defaults_with(**fields: Any) -> Any:
    return lambda d: d["defaults"].update(fields)


BAD_BLOCKS = {
    "a route's bad CORS origin": (
        route_with(cors={"origins": ["app.example.com"]}),
        "routes[2].cors: origins: 'app.example.com' is not an origin",
    ),
    "a route's CORS that is true": (
        route_with(cors=True),
        "routes[2].cors: expected a mapping of CORS settings",
    ),
    "a wildcard origin with credentials": (
        route_with(cors={"origins": ["*"], "credentials": True}),
        "routes[2].cors: origins: `*` cannot be combined with credentials",
    ),
    "a transform of a header the gateway sets": (
        route_with(transform={"request": {"headers": {"set": {"X-Forwarded-For": "1.2.3.4"}}}}),
        "routes[2].transform: request.headers.set: X-Forwarded-For is set by the gateway itself",
    ),
    "a transform naming a path group on a prefix route": (
        route_with(transform={"request": {"headers": {"set": {"X-Id": "$path.id"}}}}),
        "routes[2].transform: $path.id: the route's path has no named group 'id'",
    ),
    "a transform holding a date": (
        route_with(transform=document_load("request: {body: {set: {since: 2024-01-01}}}")),
        "routes[2].transform: expected a mapping of request and response rules (JSON data",
    ),
    "an unknown security header setting": (
        route_with(security_headers={"frame": "DENY"}),
        "routes[2].security_headers: frame: unknown key",
    ),
    "a bad IP network": (
        route_with(ip_allow=["10.0.0.0/33"]),
        "routes[2].ip_allow: '10.0.0.0/33' is not an IP address or CIDR network",
    ),
    "an IP list written as text": (
        route_with(ip_deny="10.0.0.0/8"),
        "routes[2].ip_deny: expected a list of IP addresses or CIDR networks",
    ),
    "an HTTPS redirect written as text": (
        route_with(https_redirect="yes"),
        "routes[2].https_redirect: expected true, false or null",
    ),
    "gateway-wide CORS turned off with false": (
        defaults_with(cors=False),
        "defaults.cors: expected a mapping of CORS settings",
    ),
    "a bad gateway-wide security header value": (
        defaults_with(security_headers={"frame_options": "ALLOW"}),
        "defaults.security_headers: frame_options: 'ALLOW' is not one of",
    ),
    "a negative compression threshold": (
        defaults_with(compression_min_bytes=-1),
        "defaults.compression_min_bytes: Ensure this value is greater than or equal to 0",
    ),
    "an unknown defaults key": (defaults_with(ip_allow=[]), "defaults.ip_allow: unknown field"),
    "defaults written as a list": (
        lambda d: d.update(defaults=[{"cors": None}]),
        "defaults: expected a mapping",
    ),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", BAD_BLOCKS, ids=list(BAD_BLOCKS))
def test_it_refuses_a_bad_block_with_its_path_and_changes_nothing(case):
    change, expected = BAD_BLOCKS[case]
    build_edge_configuration()
    before = rows()
    document = copy.deepcopy(good_document())
    change(document)

    with pytest.raises(DocumentInvalid) as refused:
        document_apply(document, prune=True)

    assert any(error.startswith(expected) for error in refused.value.errors), refused.value.errors
    assert rows() == before


@pytest.mark.django_db
def test_it_lists_bad_defaults_and_bad_routes_at_once():
    document = good_document()
    document["defaults"]["security_headers"] = {"hsts_max_age": -1}
    document["routes"][0]["cors"] = {"max_age": "long"}

    with pytest.raises(DocumentInvalid) as refused:
        document_apply(document)

    errors = refused.value.errors
    assert any(e.startswith("defaults.security_headers: hsts_max_age: ") for e in errors)
    assert any(e.startswith("routes[0].cors: max_age: expected whole seconds") for e in errors)
    assert not Service.objects.exists()
    assert not GatewayDefaults.objects.exists()


# --- The documented example ----------------------------------------------------------------


@pytest.mark.django_db
def test_the_example_in_the_configuration_docs_applies_and_round_trips():
    text = (Path(settings.BASE_DIR) / "docs" / "configuration.md").read_text()
    example = re.search(r"An example:\n\n```yaml\n(.*?)```", text, re.S)
    assert example is not None

    document_apply(document_load(example.group(1)))
    exported = document_dump(document_export())
    empty_database()
    document_apply(document_load(exported))

    assert document_dump(document_export()) == exported
    users = Route.objects.get(name="users")
    assert users.cors is False
    assert users.transform["request"]["body"]["rename"] == {"uid": "user_id"}
    assert GatewayDefaults.current().security_headers == {"hsts_max_age": 0}

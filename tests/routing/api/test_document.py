"""The declarative document: a configuration made in the admin's models round-trips through
export and import, imports are validated whole with paths to the bad fields, and applying one
publishes exactly one version, or none when nothing changes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group

from accounts.models import ApiKey, User
from accounts.services import api_key_issue
from routing.api.document import (
    Changes,
    DocumentInvalid,
    document_apply,
    document_dump,
    document_export,
    document_load,
)
from routing.config.holder import holder
from routing.models import (
    ConfigVersion,
    RateLimitTier,
    RolePolicy,
    Route,
    RouteTierOverride,
    Service,
    Target,
)
from tests.conftest import make_route, publish, received

SEED_DOCUMENT = Path(__file__).resolve().parents[3] / "docs" / "examples" / "seed-004.yaml"


def build_configuration() -> None:
    """Every kind of field an admin can set, as the admin saves it (through the models)."""
    doctor, _ = Group.objects.get_or_create(name="doctor")
    premium, _ = Group.objects.get_or_create(name="premium")
    users = Service(
        name="users",
        description="User accounts",
        connect_timeout=2,
        read_timeout=12.5,
        write_timeout=10,
        total_timeout=45,
        retries=2,
        retry_statuses="502, 503",
        max_in_flight=50,
        balancing=Service.Balancing.CONSISTENT_HASH,
        hash_on=Service.HashOn.HEADER,
        hash_header="X-Tenant",
        health_path="/health",
        health_interval=5,
        health_timeout=1.5,
        healthy_threshold=3,
        unhealthy_threshold=4,
        breaker_failures=7,
        breaker_statuses="503",
        breaker_cooldown=15,
    )
    users.full_clean()
    users.save()
    Target.objects.create(service=users, url="http://127.0.0.1:3002", weight=300)
    Target.objects.create(service=users, url="http://127.0.0.1:3012", enabled=False)
    legacy = Service.objects.create(name="legacy", enabled=False, allow_registration=True)
    signed_in = RolePolicy.objects.create(name="signed-in", kind=RolePolicy.Kind.AUTHENTICATED)
    doctors = RolePolicy.objects.create(
        name="doctors-only", kind=RolePolicy.Kind.ANY_OF, description="Doctors"
    )
    doctors.roles.set([doctor])
    general = RateLimitTier.objects.create(name="general", rate="100/15m")
    gold = RateLimitTier.objects.create(
        name="gold", rate="1000/15m", key=RateLimitTier.Key.HEADER, header_name="X-Client"
    )
    RateLimitTier.objects.create(name="spare", rate="5/m", per_method=True, description="unused")
    route = make_route(
        users,
        "/api/v1/users",
        name="users",
        methods="GET, POST",
        hosts="api.example.com, *.example.org",
        header_matches={"X-Api-Version": "2"},
        priority=5,
        strip_prefix=True,
        preserve_host=True,
        forward_authorization=False,
        audit=True,
        retry_unsafe_methods=True,
        stream_uploads=True,
        max_body_bytes=2048,
        role_policy=signed_in,
        rate_limit_tier=general,
    )
    RouteTierOverride.objects.create(route=route, role=premium, tier=gold)
    make_route(
        users,
        r"/api/v1/users/(?P<id>\d+)/records",
        name="records",
        match_type=Route.MatchType.REGEX,
        rewrite=r"/records/\g<id>",
        role_policy=doctors,
    )
    make_route(legacy, "/old", name="old", match_type=Route.MatchType.EXACT, enabled=False)


def empty_database() -> None:
    Route.objects.all().delete()
    Service.objects.all().delete()
    RolePolicy.objects.all().delete()
    RateLimitTier.objects.all().delete()
    Group.objects.all().delete()


def version() -> int:
    return ConfigVersion.objects.filter(pk=1).values_list("number", flat=True).first() or 0


def snapshot_of_rows() -> list[Any]:
    """Every configuration row with every value, to prove that nothing changed."""
    return [
        list(model.objects.order_by("pk").values())
        for model in (Service, Target, Route, RolePolicy, RateLimitTier, RouteTierOverride, Group)
    ] + [list(RolePolicy.roles.through.objects.order_by("pk").values())]


def history_count() -> int:
    return sum(
        model.history.count()  # type: ignore[attr-defined]
        for model in (Service, Target, Route, RolePolicy, RateLimitTier, RouteTierOverride)
    )


def seed_document(upstream_url: str) -> dict[str, Any]:
    document = document_load(SEED_DOCUMENT.read_text())
    for service in document["services"]:
        service["targets"] = [{"url": upstream_url}]
        # One shared test upstream: its probes would land among the next tests' requests.
        service.pop("health", None)
    return document


# --- Export and round trip -----------------------------------------------------------------


@pytest.mark.django_db
def test_it_round_trips_an_admin_configuration_byte_for_byte():
    build_configuration()
    exported = document_dump(document_export())

    empty_database()
    changes = document_apply(document_load(exported))

    assert document_dump(document_export()) == exported
    assert "services/users" in changes.added and "routes/records" in changes.added
    assert RouteTierOverride.objects.get().role.name == "premium"


@pytest.mark.django_db
def test_it_exports_a_short_readable_document():
    build_configuration()

    document = document_export()

    users = next(s for s in document["services"] if s["name"] == "users")
    assert users["timeouts"] == {"connect": 2, "read": 12.5, "write": 10, "total": 45}
    assert users["targets"] == [
        {"url": "http://127.0.0.1:3002", "weight": 300},
        {"url": "http://127.0.0.1:3012", "enabled": False},
    ]
    assert users["circuit_breaker"] == {"failures": 7, "statuses": [503], "cooldown": 15}
    legacy = next(s for s in document["services"] if s["name"] == "legacy")
    assert legacy == {"name": "legacy", "enabled": False, "allow_registration": True}
    route = next(r for r in document["routes"] if r["name"] == "users")
    assert route["methods"] == ["GET", "POST"]
    assert route["tiers_by_role"] == {"premium": "gold"}
    assert route["forward_authorization"] is False
    assert next(r for r in document["routes"] if r["name"] == "old") == {
        "name": "old",
        "service": "legacy",
        "enabled": False,
        "match": "exact",
        "path": "/old",
    }


@pytest.mark.django_db
def test_it_exports_api_keys_without_secrets_and_import_leaves_keys_alone():
    owner = User.objects.create_user("ci-bot", password="x")
    key, secret = api_key_issue(owner=owner, name="deploys")
    document = document_export()

    assert document["api_keys"] == [{"name": "deploys", "prefix": key.prefix, "owner": "ci-bot"}]
    text = document_dump(document)
    assert secret not in text and key.hashed_key not in text

    document["api_keys"].append({"name": "new", "prefix": "ptr_x", "owner": "nobody"})
    assert document_apply(document).is_empty()
    assert list(ApiKey.objects.values_list("name", flat=True)) == ["deploys"]


@pytest.mark.django_db(transaction=True)
def test_importing_an_export_changes_nothing_and_publishes_nothing():
    build_configuration()
    publish()
    before_rows, before_version, before_history = snapshot_of_rows(), version(), history_count()

    changes = document_apply(document_load(document_dump(document_export())), prune=True)

    assert changes.is_empty()
    assert changes.as_text() == "no changes"
    assert snapshot_of_rows() == before_rows
    assert version() == before_version
    assert history_count() == before_history


@pytest.mark.django_db(transaction=True)
def test_an_import_publishes_one_version_and_records_who_made_it():
    build_configuration()
    publish()
    admin = User.objects.create_superuser("ops", password="x")
    document = document_export()
    document["services"][1]["retries"] = 3  # users
    document["routes"].append({"name": "people", "service": "users", "path": "/people"})
    before = version()

    changes = document_apply(document, actor=admin)

    assert changes.changed == [("services/users", "retries", 2, 3)]
    assert changes.added == ["routes/people"]
    assert version() == before + 1
    assert Service.history.filter(name="users").latest("history_date").history_user == admin
    assert Route.history.get(name="people").history_user == admin


# --- Diff, dry run, prune ------------------------------------------------------------------


@pytest.mark.django_db
def test_a_dry_run_reports_the_diff_and_changes_nothing():
    build_configuration()
    document = document_export()
    document["services"][1]["timeouts"]["connect"] = 3
    document["services"][1]["targets"][0]["weight"] = 10
    document["tiers"].append({"name": "burst", "rate": "10/s"})
    del document["routes"][0]  # old: only pruning removes it
    before = snapshot_of_rows()

    changes = document_apply(document, dry_run=True, prune=True)

    assert snapshot_of_rows() == before
    assert changes.added == ["tiers/burst"]
    assert ("services/users", "timeouts.connect", 2, 3) in changes.changed
    assert changes.removed == ["routes/old"]
    text = changes.as_text()
    assert "+ tiers/burst" in text
    assert "~ services/users.timeouts.connect: 2 -> 3" in text
    assert "- routes/old" in text
    assert changes.as_dict()["removed"] == ["routes/old"]


@pytest.mark.django_db
def test_prune_removes_what_the_document_lacks_routes_first():
    build_configuration()
    document = document_export()
    # Keep the users service and its first route only: the protected references of the
    # removed routes (service legacy, policy doctors-only, tier gold) must not block removal.
    document["services"] = [s for s in document["services"] if s["name"] == "users"]
    document["routes"] = [r for r in document["routes"] if r["name"] == "users"]
    document["routes"][0].pop("tiers_by_role")
    document["policies"] = [p for p in document["policies"] if p["name"] == "signed-in"]
    document["tiers"] = [t for t in document["tiers"] if t["name"] == "general"]

    changes = document_apply(document, prune=True)

    assert changes.removed == [
        "routes/old",
        "routes/records",
        "services/legacy",
        "policies/doctors-only",
        "tiers/gold",
        "tiers/spare",
    ]
    assert list(Route.objects.values_list("name", flat=True)) == ["users"]
    assert list(Service.objects.values_list("name", flat=True)) == ["users"]
    assert not RouteTierOverride.objects.exists()
    assert sorted(RateLimitTier.objects.values_list("name", flat=True)) == ["general"]


@pytest.mark.django_db
def test_without_prune_what_the_document_lacks_stays():
    build_configuration()

    changes = document_apply({"version": 1, "tiers": [{"name": "burst", "rate": "10/s"}]})

    assert changes.added == ["tiers/burst"] and not changes.removed
    assert Route.objects.count() == 3


@pytest.mark.django_db
def test_a_document_may_name_roles_that_do_not_exist_yet():
    document_apply(
        {
            "version": 1,
            "policies": [{"name": "nurses", "kind": "all_of", "roles": ["nurse", "staff"]}],
        }
    )

    policy = RolePolicy.objects.get(name="nurses")
    assert sorted(policy.roles.values_list("name", flat=True)) == ["nurse", "staff"]


# --- Bad documents -------------------------------------------------------------------------


def good_document() -> dict[str, Any]:
    return {
        "version": 1,
        "services": [{"name": "users", "targets": [{"url": "http://127.0.0.1:3002"}]}],
        "policies": [{"name": "signed-in", "kind": "authenticated"}],
        "tiers": [{"name": "general", "rate": "100/15m"}],
        "routes": [
            {"name": "users", "service": "users", "path": "/api/v1/users", "policy": "signed-in"}
        ],
    }


def broken(change: Any) -> dict[str, Any]:
    document = copy.deepcopy(good_document())
    change(document)
    return document


BAD_DOCUMENTS = {
    "unknown service": (
        lambda d: d["routes"][0].update(service="user"),
        "routes[0].service: unknown service 'user'",
    ),
    "bad regex": (
        lambda d: d["routes"][0].update(match="regex", path="/api/(v1"),
        "routes[0].path: The regular expression does not compile",
    ),
    "wrong type": (
        lambda d: d["services"][0].update(retries="two"),
        "services[0].retries: expected an integer",
    ),
    "wrong type in a block": (
        lambda d: d["services"][0].update(timeouts={"connect": "fast"}),
        "services[0].timeouts.connect: expected a number",
    ),
    "missing name": (lambda d: d["tiers"][0].pop("name"), "tiers[0].name: required"),
    "unknown field": (
        lambda d: d["routes"][0].update(strip_prefx=True),
        "routes[0].strip_prefx: unknown field",
    ),
    "unknown top-level field": (lambda d: d.update(route=[]), "route: unknown field"),
    "duplicate names": (
        lambda d: d["tiers"].append({"name": "general", "rate": "5/m"}),
        "tiers[1].name: duplicate name 'general' (also tiers[0])",
    ),
    "a route shadowing /admin": (
        lambda d: d["routes"][0].update(path="/admin/users"),
        "routes[0].path: This path is served by the gateway itself",
    ),
    "a regex shadowing /admin": (
        lambda d: d["routes"][0].update(match="regex", path="/adm.*"),
        "routes[0].path: This pattern would shadow the gateway's own /admin path",
    ),
    "a bad choice": (
        lambda d: d["services"][0].update(balancing="hash"),
        "services[0].balancing: Value 'hash' is not a valid choice",
    ),
    "a bad target URL": (
        lambda d: d["services"][0]["targets"].append({"url": "ftp://127.0.0.1/x"}),
        "services[0].targets[1].url: ",
    ),
    "a bad rate": (
        lambda d: d["tiers"][0].update(rate="lots"),
        "tiers[0].rate: Write the rate as count/period",
    ),
    "a service with nowhere to send": (
        lambda d: d["services"][0]["targets"][0].update(enabled=False),
        "services[0].targets: An enabled service needs at least one enabled target",
    ),
    "a role policy without roles": (
        lambda d: d["policies"][0].update(kind="any_of"),
        "policies[0].roles: Choose at least one role",
    ),
    "a header value that is not a string": (
        lambda d: d["routes"][0].update(headers={"X-Api-Version": 2}),
        "routes[0].headers: expected a mapping of header name to value",
    ),
    "a bad api_keys entry": (
        lambda d: d.update(api_keys=[{"name": "k", "prefix": "p", "owner": "o", "secret": "s"}]),
        "api_keys[0].secret: unknown field",
    ),
    "a missing version": (lambda d: d.pop("version"), "version: required"),
    "a NaN timeout": (
        lambda d: d["services"][0].update(timeouts={"total": float("nan")}),
        "services[0].timeouts.total: expected a number (finite, from -1e9 to 1e9)",
    ),
    "an infinite timeout": (
        lambda d: d["services"][0].update(timeouts={"read": float("inf")}),
        "services[0].timeouts.read: expected a number (finite",
    ),
    "a huge number": (
        lambda d: d["services"][0].update(health={"interval": 10**300}),
        "services[0].health.interval: expected a number (finite",
    ),
    "a 300-digit integer": (
        lambda d: d["services"][0].update(retries=10**300),
        "services[0].retries: expected an integer from -2147483648 to 2147483647",
    ),
    "an integer just past 32 bits": (
        lambda d: d["routes"][0].update(priority=2**31),
        "routes[0].priority: expected an integer from",
    ),
    "a huge target weight": (
        lambda d: d["services"][0]["targets"][0].update(weight=10**30),
        "services[0].targets[0].weight: expected an integer from",
    ),
    "a huge status code": (
        lambda d: d["services"][0].update(retry_statuses=[502, 10**40]),
        "services[0].retry_statuses: expected a list of status codes",
    ),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", BAD_DOCUMENTS, ids=list(BAD_DOCUMENTS))
def test_it_refuses_a_bad_document_with_the_path_and_changes_nothing(case):
    change, expected = BAD_DOCUMENTS[case]
    build_configuration()
    before = snapshot_of_rows()
    document = broken(change)

    with pytest.raises(DocumentInvalid) as refused:
        document_apply(document)

    assert any(error.startswith(expected) for error in refused.value.errors), refused.value.errors
    assert snapshot_of_rows() == before


@pytest.mark.django_db
def test_it_lists_every_error_at_once():
    document = good_document()
    document["services"][0]["retries"] = 9
    document["routes"][0]["service"] = "nope"
    document["routes"].append({"name": "Bad Name!", "service": "users", "path": "x"})

    with pytest.raises(DocumentInvalid) as refused:
        document_apply(document)

    errors = refused.value.errors
    assert any(e.startswith("services[0].retries: ") for e in errors)
    assert any(e.startswith("routes[0].service: unknown service 'nope'") for e in errors)
    assert any(e.startswith("routes[1].name: ") for e in errors)
    assert any(e.startswith("routes[1].path: A path starts with /") for e in errors)
    assert not Service.objects.exists()


@pytest.mark.django_db
def test_prune_refuses_a_reference_to_what_it_would_remove():
    build_configuration()

    with pytest.raises(DocumentInvalid) as refused:
        document_apply(
            {"version": 1, "routes": [{"name": "x", "service": "users", "path": "/x"}]},
            prune=True,
        )

    assert refused.value.errors == [
        "routes[0].service: service 'users' is not in the document, and prune removes it"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 1\nservices: [\n", "(document): line 3, column 1: not valid YAML or JSON"),
        ("- a list", "(document): expected a mapping"),
        ('{"version": 1, "services": []}', None),
    ],
)
def test_it_loads_yaml_or_json(text, expected):
    if expected is None:
        assert document_load(text) == {"version": 1, "services": []}
        return
    with pytest.raises(DocumentInvalid) as refused:
        document_load(text)
    assert refused.value.errors[0].startswith(expected)


def test_changes_read_as_a_diff():
    changes = Changes(
        added=["routes/users"],
        changed=[("services/users", "retries", 1, 2), ("routes/a", "path", "/a", "/b")],
        removed=["tiers/old"],
    )

    assert changes.as_text() == (
        '+ routes/users\n~ services/users.retries: 1 -> 2\n~ routes/a.path: "/a" -> "/b"\n'
        "- tiers/old"
    )
    assert not changes.is_empty()


# --- The seed 004 example ------------------------------------------------------------------


def proxied_paths(upstream) -> list[str]:
    """What the upstream received from clients: the seed's services are health-checked on
    /health, and the monitor's probes reach the same upstream meanwhile."""
    return [r["path"] for r in received(upstream) if r["path"] != "/health"]


@pytest.mark.django_db(transaction=True)
def test_the_seed_004_example_is_served_by_a_real_gateway(upstream, client):
    empty_database()

    changes = document_apply(seed_document(upstream.url))
    publish()

    assert len([a for a in changes.added if a.startswith("services/")]) == 8
    served = {route.name: route.path for route in holder.current.routes}
    assert served["users"] == "/api/v1/users"
    assert served["audit"] == "/api/v1/audit"
    assert len(served) == 10
    answer = client.get("/api/v1/auth/status?x=1")
    assert answer.status_code == 200
    assert proxied_paths(upstream)[-1] == "/status"
    login = client.post("/api/v1/auth/login", json={"username": "x"})
    assert login.status_code == 200
    assert proxied_paths(upstream)[-1] == "/login"
    assert login.headers["RateLimit-Limit"] == "5"
    assert client.get("/api/v1/users/me").status_code == 401


@pytest.mark.django_db
def test_the_seed_004_example_round_trips():
    empty_database()
    document_apply(document_load(SEED_DOCUMENT.read_text()))
    exported = document_dump(document_export())

    empty_database()
    document_apply(document_load(exported))

    assert document_dump(document_export()) == exported

"""Report-only policies and tiers, end to end: the request a policy or tier would refuse is
forwarded to the real upstream, counted in /metrics, marked in the access log and in an audited
route's row, and enforced again once report-only is switched off and published."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError

from audit.models import AuditEntry
from routing.models import RateLimitTier, RolePolicy
from tests.conftest import make_route, make_service, publish, received
from tests.routing.observe.test_access_log import capture_access_log
from tests.routing.observe.test_metrics import scrape, settled, value

# The gateway's threads read the audit rows' database: the test data must be committed.
pytestmark = pytest.mark.django_db(transaction=True)

REPORTED = "portier_report_only_total"


def bearer(roles: list[str], subject: int = 7) -> dict[str, str]:
    claims = {
        "user_id": subject,
        "email": "ana@example.com",
        "roles": roles,
        "token_type": "access",
        "exp": int(time.time()) + 300,
    }
    raw = jwt.encode(claims, settings.PORTIER_JWT_SIGNING_KEY, algorithm="HS256")
    return {"Authorization": f"Bearer {raw}"}


def doctors_only(**fields: Any) -> RolePolicy:
    policy = RolePolicy.objects.create(name="doctors-only", kind=RolePolicy.Kind.ANY_OF, **fields)
    policy.roles.set([Group.objects.get_or_create(name="doctor")[0]])
    return policy


def reported(client: Any, route: str, kind: str, at_least: float) -> float:
    """The route's report-only count of `kind`, once it reached `at_least` (or 5 s passed)."""
    samples = settled(
        lambda: scrape(client),
        lambda s: value(s, REPORTED, route=route, kind=kind) >= at_least,
    )
    return value(samples, REPORTED, route=route, kind=kind)


def upstream_header_names(request: dict[str, Any]) -> set[str]:
    return {name for name, _ in request["headers"]}


def test_a_report_only_policy_forwards_callers_it_would_refuse(client, upstream):
    make_route(
        make_service("svc", upstream.url),
        "/ro",
        name="ro-policy",
        role_policy=doctors_only(report_only=True),
    )
    publish()
    before = value(scrape(client), REPORTED, route="ro-policy", kind="policy")
    forged = {"X-User-Id": "1", "X-User-Roles": "doctor", "X-User-Email": "boss@example.com"}

    with capture_access_log() as log:
        anonymous = client.get("/ro/a", headers=forged)
        wrong_role = client.get("/ro/b", headers={**bearer(["nurse"]), **forged})
        allowed = client.get("/ro/c", headers=bearer(["doctor"], subject=8))
        lines = log.wait(3)

    assert [anonymous.status_code, wrong_role.status_code, allowed.status_code] == [200] * 3
    assert "www-authenticate" not in anonymous.headers
    first, second, third = received(upstream)
    assert [r["path"] for r in (first, second, third)] == ["/ro/a", "/ro/b", "/ro/c"]
    # The anonymous caller's own X-User-* never arrive, and no identity is made up for it.
    assert not {"x-user-id", "x-user-roles", "x-user-email"} & upstream_header_names(first)
    # The caller with the wrong role arrives as who it really is, not as what it wrote.
    headers = dict(second["headers"])
    assert [name for name, _ in second["headers"]].count("x-user-id") == 1
    assert (headers["x-user-id"], headers["x-user-roles"]) == ("7", "nurse")
    assert headers["x-user-email"] == "ana@example.com"
    assert [line.get("would_deny") for line in lines] == ["policy", "policy", None]
    assert "would_deny" not in lines[2]
    assert reported(client, "ro-policy", "policy", before + 2) == before + 2


def test_a_report_only_tier_serves_everything_without_rate_limit_headers(client, upstream):
    tier = RateLimitTier.objects.create(name="two-an-hour", rate="2/h", report_only=True)
    make_route(make_service("svc", upstream.url), "/rt", name="ro-tier", rate_limit_tier=tier)
    publish()
    before = value(scrape(client), REPORTED, route="ro-tier", kind="limit")

    with capture_access_log() as log:
        answers = [client.get("/rt") for _ in range(5)]
        lines = log.wait(5)

    assert [a.status_code for a in answers] == [200] * 5
    assert len(received(upstream)) == 5
    for answer in answers:
        assert not {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} & set(
            answer.headers
        )
        assert "ratelimit-policy" not in answer.headers and "retry-after" not in answer.headers
    assert [line.get("would_deny") for line in lines] == [None, None, "limit", "limit", "limit"]
    assert reported(client, "ro-tier", "limit", before + 3) == before + 3


def test_a_request_both_would_refuse_is_reported_as_the_policys(client, upstream):
    tier = RateLimitTier.objects.create(name="one-a-minute", rate="1/m", report_only=True)
    make_route(
        make_service("svc", upstream.url),
        "/both",
        name="ro-both",
        role_policy=doctors_only(report_only=True),
        rate_limit_tier=tier,
    )
    publish()

    with capture_access_log() as log:
        answers = [client.get("/both") for _ in range(2)]
        lines = log.wait(2)

    assert [a.status_code for a in answers] == [200, 200]
    assert [line["would_deny"] for line in lines] == ["policy", "policy"]


def test_switching_report_only_off_enforces_again(client, upstream):
    policy = doctors_only(report_only=True)
    tier = RateLimitTier.objects.create(name="two-an-hour", rate="2/h", report_only=True)
    make_route(make_service("svc", upstream.url), "/p", role_policy=policy)
    make_route(make_service("svc2", upstream.url), "/t", rate_limit_tier=tier)
    publish()
    assert client.get("/p").status_code == 200
    assert [client.get("/t").status_code for _ in range(3)] == [200, 200, 200]

    policy.report_only = False
    policy.save()
    tier.report_only = False
    tier.save()
    publish()

    refused = client.get("/p")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "missing_credentials"
    assert client.get("/p", headers=bearer(["nurse"])).status_code == 403
    limited = client.get("/t")  # the same window's count goes on: 4 of 2
    assert limited.status_code == 429
    assert limited.headers["ratelimit-limit"] == "2" and "retry-after" in limited.headers
    assert len(received(upstream)) == 4  # the three served before, and /p once


def test_an_audited_route_records_the_request_as_allowed_with_what_would_have_happened(
    client, upstream
):
    admins = RolePolicy.objects.create(name="admins", kind=RolePolicy.Kind.ANY_OF, report_only=True)
    admins.roles.add(Group.objects.get_or_create(name="admin")[0])
    make_route(make_service("ops", upstream.url), "/ops", role_policy=admins, audit=True)
    publish()

    forwarded = client.get("/ops/users", headers=bearer(["doctor"]))
    admin = client.get("/ops/users", headers=bearer(["admin"], subject=9))

    assert [forwarded.status_code, admin.status_code] == [200, 200]
    deadline = time.monotonic() + 3
    while AuditEntry.objects.filter(status__isnull=True).exists() or (
        AuditEntry.objects.count() < 2
    ):
        assert time.monotonic() < deadline, list(AuditEntry.objects.values())
        time.sleep(0.02)
    rows = list(AuditEntry.objects.order_by("created_at", "id"))
    assert [(r.caller_id, r.outcome, r.reason, r.status) for r in rows] == [
        ("7", "allowed", "would_deny:policy", 200),
        ("9", "allowed", "", 200),
    ]


def test_an_admin_only_policy_is_never_report_only(client, upstream):
    refused = RolePolicy(name="admins", kind=RolePolicy.Kind.ADMIN_ONLY, report_only=True)
    with pytest.raises(ValidationError) as caught:
        refused.full_clean()
    assert "always enforced" in str(caught.value)

    # One written past validation is enforced anyway.
    admins = RolePolicy.objects.create(name="admins", kind=RolePolicy.Kind.ADMIN_ONLY)
    RolePolicy.objects.filter(pk=admins.pk).update(report_only=True)
    make_route(make_service("ops", upstream.url), "/ops", role_policy=admins)
    publish()

    assert client.get("/ops/users").status_code == 401
    assert client.get("/ops/users", headers=bearer(["doctor"])).status_code == 403
    assert received(upstream) == []

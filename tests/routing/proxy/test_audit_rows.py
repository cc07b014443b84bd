"""Audit rows written by the proxy: one per request to an audited route, allowed or denied,
committed before the answer, never holding a secret, and failing closed without a database."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connection

from accounts.models import User
from accounts.services import api_key_issue
from audit.models import AuditEntry
from routing.models import RateLimitTier, RolePolicy
from tests.conftest import make_route, make_service, publish, received

# The gateway's threads write the rows: the test's own data must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


def bearer(roles: list[str], subject: int = 7) -> dict[str, str]:
    claims = {
        "user_id": subject,
        "email": "ops@example.com",
        "roles": roles,
        "token_type": "access",
        "exp": int(time.time()) + 300,
    }
    raw = jwt.encode(claims, settings.PORTIER_JWT_SIGNING_KEY, algorithm="HS256")
    return {"Authorization": f"Bearer {raw}"}


def completed_rows(count: int) -> list[AuditEntry]:
    """The rows, once the last streamed answer's row has been completed (just after sending)."""
    deadline = time.monotonic() + 3
    while True:
        rows = list(AuditEntry.objects.order_by("created_at", "id"))
        if len(rows) >= count and all(row.status is not None for row in rows):
            return rows
        assert time.monotonic() < deadline, f"rows not completed: {rows}"
        time.sleep(0.02)


@pytest.fixture
def admin_route(upstream):
    admins = RolePolicy.objects.create(name="admins", kind=RolePolicy.Kind.ADMIN_ONLY)
    tier = RateLimitTier.objects.create(name="ops", rate="3/h", key="user")
    make_route(make_service("ops", upstream.url), "/ops", role_policy=admins, rate_limit_tier=tier)
    publish()


def test_each_answer_on_an_admin_only_route_leaves_one_row(client, upstream, admin_route):
    allowed = client.get("/ops/users", headers=bearer(["admin"]))
    missing = client.get("/ops/users")
    forbidden = client.get("/ops/users", headers=bearer(["doctor"], subject=8))
    for _ in range(2):
        client.get("/ops/users", headers=bearer(["admin"]))
    limited = client.get("/ops/users", headers=bearer(["admin"]))

    assert [
        allowed.status_code,
        missing.status_code,
        forbidden.status_code,
        limited.status_code,
    ] == [200, 401, 403, 429]
    rows = completed_rows(6)
    assert len(rows) == 6
    outcomes = [(r.outcome, r.reason, r.status) for r in rows]
    assert outcomes[0] == ("allowed", "", 200)
    assert outcomes[1] == ("denied", "missing_credentials", 401)
    assert outcomes[2] == ("denied", "forbidden", 403)
    assert outcomes[5] == ("denied", "rate_limited", 429)
    first = rows[0]
    assert first.request_id == allowed.headers["x-request-id"]
    assert (first.caller_id, first.caller_email, first.roles) == ("7", "ops@example.com", "admin")
    assert (first.auth_method, first.method, first.path) == ("jwt", "GET", "/ops/users")
    assert (first.route, first.service, first.upstream_status) == ("r1-ops", "ops", 200)
    assert first.target == upstream.url
    assert first.client_ip == "127.0.0.1"
    assert first.bytes_out == len(allowed.content)
    assert first.latency_ms > 0


def test_a_normal_route_writes_no_row(client, upstream):
    make_route(make_service("plain", upstream.url), "/plain")
    publish()

    assert client.get("/plain").status_code == 200
    assert AuditEntry.objects.count() == 0


def test_a_route_with_the_audit_flag_is_audited(client, upstream):
    make_route(make_service("flagged", upstream.url), "/flagged", audit=True)
    publish()

    client.get("/flagged")

    assert AuditEntry.objects.get().outcome == "allowed"


def test_an_upstream_failure_completes_the_allowed_row(client, dead_url):
    admins = RolePolicy.objects.create(name="admins", kind=RolePolicy.Kind.ADMIN_ONLY)
    make_route(make_service("down", dead_url), "/down", role_policy=admins)
    publish()

    assert client.get("/down", headers=bearer(["admin"])).status_code == 502

    row = AuditEntry.objects.get()
    assert (row.outcome, row.status, row.reason, row.upstream_status) == (
        "allowed",
        502,
        "upstream_unavailable",
        None,
    )


def test_rows_hold_no_secret(client, upstream):
    owner = User.objects.create_user("svc", password="x")
    owner.groups.add(Group.objects.create(name="admin"))
    _, key = api_key_issue(owner=owner, name="ops")
    admins = RolePolicy.objects.create(name="admins", kind=RolePolicy.Kind.ADMIN_ONLY)
    make_route(make_service("ops", upstream.url), "/ops", role_policy=admins)
    publish()
    token = bearer(["admin"])["Authorization"].split()[1]

    client.get(
        "/ops/a?password=hunter2&access_token=tok123&x=1&api_key=k9",
        headers={"Authorization": f"Bearer {token}", "Cookie": "sessionid=cookie42"},
    )
    client.get("/ops/b", headers={"X-API-Key": key})

    rows = list(AuditEntry.objects.values())
    assert len(rows) == 2
    dumped = repr(rows)
    for secret in (token, key, key.split(".")[1], "hunter2", "tok123", "k9", "cookie42"):
        assert secret not in dumped
    by_path = {row["path"]: row for row in rows}
    assert by_path["/ops/a"]["query"] == (
        "password=[REDACTED]&access_token=[REDACTED]&x=1&api_key=[REDACTED]"
    )
    assert by_path["/ops/b"]["key_prefix"] == key[4:12]
    assert by_path["/ops/b"]["auth_method"] == "api_key"


@pytest.fixture
def audit_table_down() -> Iterator[None]:
    """Make the database refuse audit rows (every other table keeps working)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "ALTER TABLE audit_auditentry ADD CONSTRAINT audit_down CHECK (false) NOT VALID"
            )
        else:
            cursor.execute("ALTER TABLE audit_auditentry RENAME TO audit_auditentry_away")
    yield
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditentry DROP CONSTRAINT audit_down")
        else:
            cursor.execute("ALTER TABLE audit_auditentry_away RENAME TO audit_auditentry")


def test_without_the_audit_table_requests_fail_closed_and_reach_nothing(
    client, upstream, admin_route, audit_table_down
):
    allowed = client.get("/ops/users", headers=bearer(["admin"]))
    denied = client.get("/ops/users")

    for response in (allowed, denied):
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "audit_unavailable"
    assert received(upstream) == []


@pytest.mark.skipif(
    not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
    reason="SQLite takes one writer at a time: 200 concurrent audited requests outwait its lock "
    "timeout; CI runs this on PostgreSQL",
)
def test_under_200_concurrent_requests_every_request_has_its_row(client, upstream):
    admins = RolePolicy.objects.create(name="admins", kind=RolePolicy.Kind.ADMIN_ONLY)
    make_route(make_service("ops", upstream.url), "/ops", role_policy=admins)
    publish()
    headers = bearer(["admin"])

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = Counter(
            pool.map(lambda _: client.get("/ops/x", headers=headers).status_code, range(200))
        )

    assert statuses == Counter({200: 200})
    assert AuditEntry.objects.count() == 200
    assert AuditEntry.objects.values("request_id").distinct().count() == 200


def test_a_long_method_and_many_roles_are_recorded_whole(client, upstream, admin_route):
    """Any method the parser accepts, and a caller with many roles, still get their row (a
    column too narrow for them would refuse the request as audit_unavailable)."""
    roles = ["admin", *(f"team-{n:03d}-with-a-long-role-name" for n in range(40))]

    unsubscribe = client.request("UNSUBSCRIBE", "/ops/feed")
    many_roles = client.get("/ops/users", headers=bearer(roles))

    assert unsubscribe.status_code == 401
    assert many_roles.status_code == 200
    first, second = completed_rows(2)
    assert (first.method, first.outcome, first.reason) == (
        "UNSUBSCRIBE",
        "denied",
        "missing_credentials",
    )
    assert second.roles == ",".join(sorted(roles))

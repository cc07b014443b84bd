"""An audited route with a locked database answers 503 audit_unavailable within about two seconds
(PORTIER_AUDIT_WRITE_TIMEOUT), not after the driver's own timeouts; the request is never
forwarded, and once the lock is gone the route works again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import jwt
import pytest
from django.conf import settings
from django.db import connections

from audit.models import AuditEntry
from routing.models import RolePolicy
from tests.conftest import make_route, make_service, publish, received
from tests.servers import ServerThread

# The gateway's threads write the rows: the test's own data must be committed.
pytestmark = pytest.mark.django_db(transaction=True)

# Generous against the 2 s bound (a slow machine), well under the 5-10 s it took before.
CLIENT_TIMEOUT = 3.0


def bearer(roles: list[str]) -> dict[str, str]:
    claims = {
        "user_id": 7,
        "email": "ops@example.com",
        "roles": roles,
        "token_type": "access",
        "exp": int(time.time()) + 300,
    }
    raw = jwt.encode(claims, settings.PORTIER_JWT_SIGNING_KEY, algorithm="HS256")
    return {"Authorization": f"Bearer {raw}"}


@pytest.fixture
def admin_route(upstream) -> None:
    admins = RolePolicy.objects.create(name="admins", kind=RolePolicy.Kind.ADMIN_ONLY)
    make_route(make_service("ops", upstream.url), "/ops", role_policy=admins)
    publish()


@contextmanager
def audit_table_locked() -> Iterator[None]:
    """Another session holds the audit table's write lock (SQLite: the whole database's), as a
    long migration or a stuck transaction would, until the block ends."""
    other = connections.create_connection("default")
    other.ensure_connection()
    try:
        with other.cursor() as cursor:
            if other.vendor == "postgresql":
                cursor.execute("BEGIN")
                cursor.execute("LOCK TABLE audit_auditentry IN ACCESS EXCLUSIVE MODE")
            else:
                cursor.execute("BEGIN IMMEDIATE")
        yield
    finally:
        with other.cursor() as cursor:
            cursor.execute("ROLLBACK")
        other.close()


@pytest.fixture
def http(gateway: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=CLIENT_TIMEOUT) as client:
        yield client


def test_a_locked_database_refuses_an_audited_request_in_time(http, upstream, admin_route):
    with audit_table_locked():
        allowed = http.get("/ops/users", headers=bearer(["admin"]))
        denied = http.get("/ops/users")  # its denial's row cannot be written either

    for response in (allowed, denied):
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "audit_unavailable"
        assert error["request_id"] == response.headers["x-request-id"]
    assert received(upstream) == []


def test_once_the_lock_is_gone_the_route_works_and_no_row_says_the_refusal_was_forwarded(
    http, upstream, admin_route
):
    with audit_table_locked():
        refused = http.get("/ops/users", headers=bearer(["admin"]))
    served = http.get("/ops/users", headers=bearer(["admin"]))

    assert refused.status_code == 503
    assert served.status_code == 200
    assert len(received(upstream)) == 1
    time.sleep(0.5)  # a row written late is marked as refused by now
    forwarded = AuditEntry.objects.filter(outcome="allowed")
    assert list(forwarded.values_list("request_id", flat=True)) == [served.headers["x-request-id"]]

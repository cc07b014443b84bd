"""Secrets a client puts in a query string, a cookie or a path parameter never reach the access
log, the audit rows or the trace spans, under any of the names they commonly go by."""

from __future__ import annotations

import json

import pytest

from audit.models import AuditEntry
from routing.models import RolePolicy
from tests.conftest import make_route, make_service, publish, received
from tests.routing.observe.test_access_log import capture_access_log
from tests.routing.observe.test_tracing import exported_spans  # noqa: F401 (a fixture)
from tests.routing.proxy.test_audit_rows import completed_rows

# The gateway's threads write the audit rows: the test's own data must be committed.
pytestmark = pytest.mark.django_db(transaction=True)

NAMES = [
    "jwt",
    "token",
    "access_token",
    "id_token",
    "refresh_token",
    "api_key",
    "apikey",
    "api-key",
    "key",
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "session",
    "sessionid",
    "PHPSESSID",
    "sid",
    "auth",
    "signature",
    "sig",
    "code",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "csrfmiddlewaretoken",
    "private_key",
    "otp",
]


@pytest.fixture
def access_log():
    with capture_access_log() as lines:
        yield lines


@pytest.fixture
def audited(upstream):
    make_route(make_service("ops", upstream.url), "/ops", audit=True)
    publish()


def row_text(row: AuditEntry) -> str:
    return " ".join(str(getattr(row, field.name)) for field in AuditEntry._meta.fields)


@pytest.mark.parametrize("name", NAMES)
def test_a_secret_under_a_common_name_is_in_no_record(client, upstream, audited, access_log, name):
    response = client.get(
        f"/ops/users?{name}=SV-query-1&keep=visible",
        headers={"Cookie": f"{name}=SV-cookie-2; theme=dark"},
    )

    assert response.status_code == 200
    assert received(upstream)[-1]["query"] == f"{name}=SV-query-1&keep=visible"  # sent as is
    (line,) = access_log.wait(1)
    assert "SV-" not in access_log.lines[0]
    assert line["path"] == f"/ops/users?{name}=[REDACTED]&keep=visible"
    (row,) = completed_rows(1)
    assert "SV-" not in row_text(row)
    assert row.query == f"{name}=[REDACTED]&keep=visible"


@pytest.mark.parametrize(
    ("query", "logged"),
    [
        ("Access_Token=SV-1&a=b", "Access_Token=[REDACTED]&a=b"),
        ("API-KEY=SV-1", "API-KEY=[REDACTED]"),
        ("%70assword=SV-1", "%70assword=[REDACTED]"),
        ("user%5Bpassword%5D=SV-1", "user%5Bpassword%5D=[REDACTED]"),
        ("user[password]=SV-1", "user[password]=[REDACTED]"),
        ("a=1;token=SV-1", "a=1;token=[REDACTED]"),
        ("token=SV-1&token=SV-2", "token=[REDACTED]&token=[REDACTED]"),
        ("q=eyJhbGciOiJIUzI1NiJ9.eyJTVi0iOjF9.SV-sig", "q=[REDACTED]"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJTVi0iOjF9.SV-sig", "[REDACTED]"),
    ],
)
def test_secrets_are_found_in_any_spelling_of_their_name_or_by_their_jwt_shape(
    client, upstream, audited, access_log, query, logged
):
    assert client.get(f"/ops/x?{query}").status_code == 200

    (line,) = access_log.wait(1)
    assert "SV-" not in access_log.lines[0]
    assert line["path"] == f"/ops/x?{logged}"
    (row,) = completed_rows(1)
    assert row.query == logged


@pytest.mark.parametrize("name", ["token", "api_key", "password", "code"])
def test_a_denied_requests_record_holds_no_secret_either(client, upstream, access_log, name):
    admins = RolePolicy.objects.create(name="admins", kind=RolePolicy.Kind.ADMIN_ONLY)
    make_route(make_service("ops", upstream.url), "/ops", role_policy=admins)
    publish()

    response = client.get(f"/ops/x?{name}=SV-query-1", headers={"Cookie": f"{name}=SV-cookie-2"})

    assert response.status_code == 401
    assert received(upstream) == []
    access_log.wait(1)
    assert "SV-" not in access_log.lines[0]
    (row,) = completed_rows(1)
    assert (row.outcome, row.query) == ("denied", f"{name}=[REDACTED]")
    assert "SV-" not in row_text(row)


def test_a_session_id_in_a_path_parameter_is_redacted_in_the_log(client, upstream, access_log):
    make_route(make_service("app", upstream.url), "/app")
    publish()

    response = client.get("/app/cart;jsessionid=SV-matrix-1/items;v=2")

    assert response.status_code == 200
    assert received(upstream)[-1]["path"] == "/app/cart;jsessionid=SV-matrix-1/items;v=2"
    (line,) = access_log.wait(1)
    assert line["path"] == "/app/cart;jsessionid=[REDACTED]/items;v=2"


@pytest.mark.parametrize("name", ["token", "session", "api_key"])
def test_trace_spans_hold_no_secret(client, upstream, audited, exported_spans, name):  # noqa: F811
    response = client.get(
        f"/ops/a;{name}=SV-matrix-3/b?{name}=SV-query-1",
        headers={"Cookie": f"{name}=SV-cookie-2"},
    )

    assert response.status_code == 200
    spans = exported_spans()
    assert spans
    for span in spans.values():
        assert "SV-" not in json.dumps(dict(span.attributes or {}), default=str)
        assert "SV-" not in span.name
    assert spans["GET gateway"].attributes["url.path"] == f"/ops/a;{name}=[REDACTED]/b"

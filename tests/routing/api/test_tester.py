"""The route tester (routing.api.tester) through `POST /admin/api/tester`, on the running
gateway and its live snapshot: the winner and the candidates that lost and why, 404 and 405 as
the matcher answers them, the policy decision for a token, the tier with a count the tester
reads but never increments, the transformed upstream request, the target the balancer would
pick, the upstream never called, and who may ask."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group, Permission

from accounts.models import User
from routing.upstream import balancer
from tests.conftest import make_route, make_service, publish, received
from tests.routing.api import test_management_api as management
from tests.routing.api.test_management_api import bearer, error_code
from tests.routing.proxy.test_identity import policy, token
from tests.routing.proxy.test_limits import tier

pytestmark = management.pytestmark
admin = management.admin  # fixture: a superuser's bearer headers


def ask(client: Any, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    body.setdefault("method", "GET")
    body.setdefault("host", "api.example.com")
    response = client.post("/admin/api/tester", json=body, headers=auth)
    assert response.status_code == 200, response.text
    return response.json()


def losers(found: dict[str, Any]) -> dict[str, list[str]]:
    return {c["route"]: c["reasons"] for c in found["candidates"] if not c["won"]}


def test_it_names_the_winner_and_why_each_other_candidate_lost(client, admin, upstream):
    service = make_service("svc", upstream.url)
    make_route(service, "/api", name="other-host", priority=50, hosts="admin.example.com")
    make_route(service, "/api", name="v2", priority=40, header_matches={"X-Version": "2"})
    make_route(service, "/api", name="posts", priority=30, methods="POST")
    make_route(service, "/api", name="main", priority=20)
    make_route(service, "/api", name="fallback", priority=10)
    make_route(service, "/elsewhere", name="unrelated")
    publish()

    found = ask(client, admin, path="/api/users", headers={"X-Version": "1"})

    assert found["route"]["name"] == "main"
    assert found["outcome"] == {"stage": "forward", "status": None}
    reasons = losers(found)
    assert "unrelated" not in reasons  # its path does not match: not a candidate
    assert "admin.example.com" in reasons["other-host"][0]
    assert "headers do not match" in reasons["v2"][0]
    assert "method GET not in POST" in reasons["posts"][0]
    assert reasons["fallback"] == ["an earlier route won (main)"]
    assert received(upstream) == []


def test_it_answers_405_and_404_as_the_matcher_does(client, admin, upstream):
    make_route(make_service("svc", upstream.url), "/only-post", name="posts", methods="POST")
    publish()

    refused = ask(client, admin, method="DELETE", path="/only-post")
    assert refused["route"] is None
    assert refused["outcome"]["status"] == 405
    assert refused["outcome"]["code"] == "method_not_allowed"
    assert "method DELETE not in POST" in losers(refused)["posts"][0]

    missing = ask(client, admin, path="/nowhere")
    assert missing["outcome"]["status"] == 404 and missing["candidates"] == []


def test_the_policy_decision_for_a_token_none_and_the_wrong_role(client, admin, upstream):
    make_route(make_service("svc", upstream.url), "/p", role_policy=policy("any_of", "doctor"))
    publish()

    allowed = ask(client, admin, path="/p", token=token(roles=["doctor"]))
    assert allowed["identity"]["result"] == "authenticated"
    assert allowed["identity"]["subject"] == "7" and allowed["identity"]["roles"] == ["doctor"]
    assert allowed["policy"]["decision"] == "allowed"
    assert allowed["outcome"]["stage"] == "forward"

    anonymous = ask(client, admin, path="/p")
    assert anonymous["identity"] == {"result": "anonymous"}
    assert anonymous["policy"]["decision"] == "denied" and anonymous["policy"]["status"] == 401
    assert anonymous["outcome"]["status"] == 401

    wrong = ask(client, admin, path="/p", token=token(roles=["nurse"]))
    assert wrong["policy"]["status"] == 403 and wrong["outcome"]["code"] == "forbidden"

    broken = ask(client, admin, path="/p", token="not-a-jwt")
    assert broken["identity"]["result"] == "refused" and broken["identity"]["status"] == 401
    assert broken["outcome"]["stage"] == "identity"
    assert received(upstream) == []


def test_it_reads_the_callers_count_without_counting(client, admin, upstream):
    make_route(make_service("svc", upstream.url), "/l", rate_limit_tier=tier("5/h"))
    publish()

    for _ in range(3):
        found = ask(client, admin, path="/l")
        assert found["tier"]["count"] == 0 and found["tier"]["remaining"] == 5
    assert found["tier"]["key"] == "route" and found["tier"]["limit"] == 5

    assert client.get("/l").status_code == 200  # a real request counts
    assert client.get("/l").status_code == 200
    assert ask(client, admin, path="/l")["tier"]["count"] == 2
    assert ask(client, admin, path="/l")["tier"]["count"] == 2
    assert len(received(upstream)) == 2  # the real requests only


def test_it_shows_the_transformed_upstream_request(client, admin, upstream):
    make_route(
        make_service("svc", upstream.url),
        "/t",
        strip_prefix=True,
        transform={
            "request": {
                "headers": {"set": {"X-Tenant": "acme"}},
                "query": {"set": {"limit": "50"}, "remove": ["debug"]},
            }
        },
    )
    publish()

    found = ask(client, admin, path="/t/items?debug=1&q=x", headers={"X-Client": "yes"})

    upstream_request = found["upstream"]
    assert upstream_request["path"] == "/items"
    assert sorted(upstream_request["query"].split("&")) == ["limit=50", "q=x"]
    names = {name: value for name, value in upstream_request["headers"]}
    assert names["x-tenant"] == "acme" and names["x-client"] == "yes"
    assert "x-request-id" in names and "x-forwarded-for" in names
    assert received(upstream) == []


def test_it_shows_the_target_the_balancer_would_pick_without_taking_it(
    client, admin, upstream, upstream_b
):
    service = make_service("svc", upstream.url, upstream_b.url)
    make_route(service, "/b")
    publish()

    first = ask(client, admin, path="/b")["target"]
    again = ask(client, admin, path="/b")["target"]

    assert first["picked"] in {upstream.url, upstream_b.url}
    assert again["picked"] == first["picked"]  # the rotation did not move
    assert {t["url"] for t in first["targets"]} == {upstream.url, upstream_b.url}
    assert all(t["available"] for t in first["targets"])
    assert sum(balancer.in_flight.values()) == 0
    answered = client.get("/b").json()  # the echo upstream names itself
    assert answered and received(upstream) + received(upstream_b)


def test_a_bad_body_is_400_invalid_request(client, admin):
    for body in (
        {"method": "GET", "path": "no-slash"},
        {"method": "GE T", "path": "/"},
        {"path": "/"},
        {"method": "GET", "path": "/", "headers": ["X-A: 1"]},
        {"method": "GET", "path": "/", "headers": {"X-A": {"nested": 1}}},
        {"method": "GET", "path": "/", "headers": {"Bad Name": "1"}},
    ):
        response = client.post("/admin/api/tester", json=body, headers=admin)
        assert response.status_code == 400, (body, response.text)
        assert error_code(response) == "invalid_request"


def test_staff_without_view_route_may_not_ask(client):
    staff = User.objects.create_user("staff", password="pw-9x-long", is_staff=True)
    refused = client.post(
        "/admin/api/tester", json={"method": "GET", "path": "/"}, headers=bearer(staff)
    )
    assert refused.status_code == 403

    staff.user_permissions.add(Permission.objects.get(codename="view_route"))
    allowed = client.post(
        "/admin/api/tester",
        json={"method": "GET", "path": "/"},
        headers=bearer(User.objects.get(pk=staff.pk)),
    )
    assert allowed.status_code == 200, allowed.text
    assert client.post("/admin/api/tester", json={}).status_code in {401, 403}


def test_it_tests_as_a_user_with_their_roles_and_never_shows_the_token(client, admin, upstream):
    doctor = User.objects.create_user("dana", email="dana@example.com", password="pw-9x-long")
    doctor.groups.add(Group.objects.create(name="doctor"))
    User.objects.create_user("nurse-nora", password="pw-9x-long")
    route = make_route(
        make_service("svc", upstream.url),
        "/p",
        role_policy=policy("any_of", "doctor"),
        forward_authorization=True,
    )
    publish()

    as_doctor = ask(client, admin, path="/p", user="dana")
    as_nurse = ask(client, admin, path="/p", user="nurse-nora")

    assert as_doctor["tested_as"] == "dana"
    assert as_doctor["identity"]["subject"] == str(doctor.pk)
    assert as_doctor["identity"]["roles"] == ["doctor"]
    assert as_doctor["policy"]["decision"] == "allowed"
    assert as_nurse["policy"]["decision"] == "denied"
    assert as_nurse["outcome"]["status"] == 403
    forwarded = dict(as_doctor["upstream"]["headers"])
    assert forwarded["authorization"] == "Bearer (token minted for dana)"
    assert "eyJ" not in str(as_doctor)  # no JWT anywhere in the findings
    assert route.name == as_doctor["route"]["name"] and received(upstream) == []


def test_testing_as_a_user_needs_view_user_and_a_real_user(client, admin):
    staff = User.objects.create_user("staff", password="pw-9x-long", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_route"))
    User.objects.create_user("dana", password="pw-9x-long")
    body = {"method": "GET", "path": "/", "user": "dana"}

    refused = client.post("/admin/api/tester", json=body, headers=bearer(staff))
    unknown = client.post("/admin/api/tester", json={**body, "user": "nobody"}, headers=admin)
    both = client.post("/admin/api/tester", json={**body, "token": "x.y.z"}, headers=admin)

    for response in (refused, unknown, both):
        assert response.status_code == 400, response.text
        assert error_code(response) == "invalid_request"
    assert "view users" in refused.text
    assert "No active user is named nobody" in unknown.text

"""Route transforms end to end: what the recording upstream receives once a route's rules have
rewritten the request's headers, query and JSON body, and what the client gets back."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from django.conf import settings
from django.core.exceptions import ValidationError

from tests.conftest import make_route, make_service, publish, received
from tests.raw_http import raw_exchange

pytestmark = pytest.mark.django_db


def route(upstream, path: str = "/t", **transform) -> None:
    """A route to the upstream with the transform's `request` and `response` blocks."""
    fields = {k: transform.pop(k) for k in ("name", "match_type") if k in transform}
    make_route(make_service("svc", upstream.url), path, transform=transform, **fields)
    publish()


def seen(upstream) -> dict:
    """The last request the upstream received, its headers as lower-case name -> values."""
    last = received(upstream)[-1]
    headers: dict[str, list[str]] = {}
    for name, value in last["headers"]:
        headers.setdefault(name, []).append(value)
    return {**last, "headers": headers}


def bearer() -> dict[str, str]:
    claims = {
        "user_id": 7,
        "email": "ana@example.com",
        "roles": ["doctor", "admin"],
        "token_type": "access",
        "exp": int(time.time()) + 300,
    }
    token = jwt.encode(claims, settings.PORTIER_JWT_SIGNING_KEY, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def test_header_rules_set_add_remove_and_rename(client, upstream):
    headers = {"set": {"X-Tenant": "acme"}, "add": {"X-Tag": "gateway"}}
    headers |= {"remove": ["X-Debug"], "rename": {"X-Old": "X-New"}}
    route(upstream, request={"headers": headers})

    response = client.get(
        "/t",
        headers=[("X-Tenant", "evil"), ("X-Tag", "client"), ("X-Debug", "1"), ("X-Old", "v")],
    )

    assert response.status_code == 200
    headers = seen(upstream)["headers"]
    assert headers["x-tenant"] == ["acme"]
    assert sorted(headers["x-tag"]) == ["client", "gateway"]
    assert "x-debug" not in headers
    assert "x-old" not in headers and headers["x-new"] == ["v"]


def test_query_rules_set_add_remove_and_rename(client, upstream):
    query = {"set": {"limit": "50"}, "add": {"tag": "gw"}}
    route(upstream, request={"query": {**query, "remove": ["debug"], "rename": {"q": "search"}}})

    client.get("/t?q=shoes&limit=5000&debug=1&tag=a&keep=x%2Fy")

    query = seen(upstream)["query"].split("&")
    assert sorted(query) == sorted(["search=shoes", "limit=50", "tag=a", "tag=gw", "keep=x%2Fy"])


def test_a_query_rule_leaves_the_parameters_it_does_not_name_byte_for_byte(client, upstream):
    route(upstream, request={"query": {"remove": ["debug"]}})

    client.get("/t?sig=%FF%FE%00&name=caf%C3%A9&debug=1")

    assert seen(upstream)["query"] == "sig=%FF%FE%00&name=caf%C3%A9"


def test_body_rules_rewrite_a_json_object_and_its_content_length(client, upstream):
    body = {"set": {"source": "gateway", "version": 2}, "remove": ["role"]}
    route(upstream, request={"body": {**body, "rename": {"name": "full_name"}}})

    client.post("/t", json={"name": "Ana", "role": "admin", "note": "hé"})

    last = seen(upstream)
    body = json.loads(last["body"].encode("latin-1"))
    assert body == {"full_name": "Ana", "note": "hé", "source": "gateway", "version": 2}
    assert last["headers"]["content-length"] == [str(last["body_bytes"])]


def test_a_chunked_json_body_arrives_rewritten_with_a_content_length(gateway, upstream):
    route(upstream, request={"body": {"set": {"source": "gateway"}}})
    chunks = [b'{"name":', b' "Ana"}']
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"

    answer = raw_exchange(
        gateway.url,
        b"POST /t HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked",
        body,
    )

    assert answer.status == 200
    last = seen(upstream)
    assert json.loads(last["body"]) == {"name": "Ana", "source": "gateway"}
    assert last["headers"]["content-length"] == [str(last["body_bytes"])]
    assert "transfer-encoding" not in last["headers"]


def test_placeholders_are_filled_from_the_caller_and_the_request(client, upstream):
    values = {"X-Who": "$user_id <$email> [$roles]", "X-Trace": "$request_id"}
    values |= {"X-Client": "$client_ip", "X-Route": "$route", "X-Price": "$$5"}
    route(upstream, request={"headers": {"set": values}}, name="placeholders")

    client.get("/t", headers={**bearer(), "X-Request-ID": "req-42"})

    headers = seen(upstream)["headers"]
    assert headers["x-who"] == ["7 <ana@example.com> [admin,doctor]"]
    assert headers["x-trace"] == ["req-42"]
    assert headers["x-client"] == ["127.0.0.1"]
    assert headers["x-route"] == ["placeholders"]
    assert headers["x-price"] == ["$5"]


def test_an_anonymous_caller_leaves_identity_placeholders_unsent(client, upstream):
    route(upstream, request={"headers": {"set": {"X-Who": "$user_id"}}})

    client.get("/t", headers={"X-Who": "forged"})

    assert "x-who" not in seen(upstream)["headers"]


def test_a_regex_routes_named_group_fills_a_path_placeholder(client, upstream):
    query = {"set": {"item": "$path.id"}}
    route(upstream, r"/items/(?P<id>[0-9]+)", request={"query": query}, match_type="regex")

    client.get("/items/1234")

    assert seen(upstream)["query"] == "item=1234"


def test_a_transform_naming_an_identity_header_is_refused(upstream):
    service = make_service("svc", upstream.url)
    for transform in (
        {"request": {"headers": {"set": {"X-User-Id": "1"}}}},
        {"request": {"headers": {"rename": {"X-Client-Id": "x-user-id"}}}},
    ):
        with pytest.raises(ValidationError) as refused:
            make_route(service, "/t", transform=transform)
        assert "transform" in refused.value.message_dict


def test_a_client_sent_identity_header_never_reaches_the_upstream(client, upstream):
    route(upstream, request={"headers": {"set": {"X-Tenant": "acme"}}})

    client.get("/t", headers={"X-User-Id": "1", "X-User-Roles": "admin"})

    headers = seen(upstream)["headers"]
    assert "x-user-id" not in headers and "x-user-roles" not in headers
    assert headers["x-tenant"] == ["acme"]


def test_a_body_that_is_not_json_passes_untouched(client, upstream):
    route(upstream, request={"body": {"set": {"source": "gateway"}}})

    client.post("/t", content=b"a=1&b=2", headers={"Content-Type": "text/plain"})

    assert seen(upstream)["body"] == "a=1&b=2"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"name": ', "not valid JSON"),
        (b'["a", "b"]', "JSON object"),
        (b"42", "JSON object"),
        (b'{"amount": 1e400}', "number"),
        (b'{"amount": NaN}', "number"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused_before_the_upstream(
    client, upstream, body, message
):
    route(upstream, request={"body": {"set": {"source": "gateway"}}})

    response = client.post("/t", content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_body" and message in error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    assert received(upstream) == []


def test_a_body_above_the_transform_limit_is_refused_before_the_upstream(
    client, upstream, settings
):
    settings.PORTIER_TRANSFORM_BODY_BYTES = 64
    route(upstream, request={"body": {"remove": ["role"]}})

    response = client.post("/t", json={"padding": "x" * 100})

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert received(upstream) == []


def test_a_chunked_body_above_the_transform_limit_is_refused_before_the_upstream(
    gateway, upstream, settings
):
    settings.PORTIER_TRANSFORM_BODY_BYTES = 64
    route(upstream, request={"body": {"remove": ["role"]}})
    chunk = b'{"padding": "' + b"x" * 100 + b'"}'

    answer = raw_exchange(
        gateway.url,
        b"POST /t HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked",
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk),
    )

    assert answer.status == 413
    assert received(upstream) == []


def test_response_header_rules_shape_what_the_client_gets(client, upstream):
    headers = {"set": {"X-Served-By": "portier $route"}, "add": {"Cache-Control": "no-store"}}
    headers |= {"remove": ["X-Upstream"], "rename": {"Content-Type": "X-Original-Type"}}
    route(upstream, response={"headers": headers}, name="shaped")

    response = client.get("/t")

    assert response.status_code == 200
    assert response.headers["x-served-by"] == "portier shaped"
    assert response.headers["cache-control"] == "no-store"
    assert "x-upstream" not in response.headers
    assert response.headers["x-original-type"] == "application/json"
    assert "content-type" not in response.headers
    assert response.json()["path"] == "/t"


@pytest.mark.parametrize("name", ["X-Original-URL", "X-Rewrite-URL", "Proxy", "X-Original-URI"])
def test_a_transform_cannot_write_a_header_the_gateway_always_drops(upstream, name):
    service = make_service("dropped", upstream.url)
    with pytest.raises(ValidationError):
        make_route(service, "/d", transform={"request": {"headers": {"rename": {"X-Path": name}}}})

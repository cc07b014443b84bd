"""CORS end to end: preflights answered by the gateway, the headers a browser needs on every
answer, origins that only look allowed, and the gateway-wide block against a route's own."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from tests.conftest import make_route, make_service, publish, received

pytestmark = pytest.mark.django_db

APP = "https://app.example.com"
CORS = {
    "origins": [APP],
    "methods": ["GET", "POST"],
    "credentials": True,
    "max_age": 600,
    "expose_headers": ["X-Request-ID"],
}


def route(server, cors=None, path: str = "/c", **fields) -> None:
    make_route(make_service("svc", server.url), path, cors=cors, **fields)
    publish()


def preflight(client, origin: str, path: str = "/c", method: str = "POST"):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "content-type, x-custom",
        },
    )


def allow_headers(response) -> set[str]:
    return {name for name in response.headers if name.startswith("access-control-allow-")}


def varies_on_origin(response) -> bool:
    values = ",".join(response.headers.get_list("vary")).lower()
    return "origin" in {value.strip() for value in values.split(",")}


def test_an_allowed_preflight_is_answered_by_the_gateway(client, upstream):
    route(upstream, CORS)

    response = preflight(client, APP)

    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["access-control-allow-methods"] == "GET, POST"
    assert response.headers["access-control-allow-headers"] == "content-type, x-custom"
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["access-control-max-age"] == "600"
    assert varies_on_origin(response)
    assert response.headers["x-request-id"]
    assert received(upstream) == []


# Origins that are not APP nor under the pattern https://*.example.com, some only look it.
FOREIGN_ORIGINS = [
    "https://evil.example.org",
    "https://app.example.com.evil.com",
    "https://app.example.evil.com",
    "https://example.com.evil.com",
    "https://evilexample.com",
    "http://app.example.com",
    "https://app.example.com:8443",
    "null",
]


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
def test_a_preflight_from_a_foreign_or_look_alike_origin_gets_no_cors_headers(
    client, upstream, origin
):
    route(upstream, {**CORS, "origin_patterns": ["https://*.example.com"]})

    response = preflight(client, origin)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "origin_not_allowed"
    assert allow_headers(response) == set()
    assert varies_on_origin(response)
    assert received(upstream) == []


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
def test_a_simple_request_from_a_foreign_or_look_alike_origin_gets_no_cors_headers(
    client, upstream, origin
):
    route(upstream, {**CORS, "origin_patterns": ["https://*.example.com"]})

    response = client.get("/c", headers={"Origin": origin})

    # Passed through (the browser, not the gateway, withholds the answer from the page) but
    # with nothing that would let the page read it.
    assert response.status_code == 200
    assert allow_headers(response) == set()
    assert "access-control-expose-headers" not in response.headers
    assert varies_on_origin(response)
    assert len(received(upstream)) == 1


def test_an_origin_pattern_allows_subdomains_only_over_its_scheme(client, upstream):
    route(upstream, {"origins": [], "origin_patterns": ["https://*.example.com"]})

    for origin in ("https://app.example.com", "https://a.b.example.com"):
        response = client.get("/c", headers={"Origin": origin})
        assert response.headers["access-control-allow-origin"] == origin
    for origin in ("https://example.com", "http://app.example.com", "https://app.example.co"):
        response = client.get("/c", headers={"Origin": origin})
        assert "access-control-allow-origin" not in response.headers


def test_an_origin_pattern_whose_wildcard_runs_into_the_domain_is_refused(upstream):
    service = make_service("svc", upstream.url)
    with pytest.raises(ValidationError) as refused:
        make_route(service, "/c", cors={"origin_patterns": ["https://*example.com"]})
    assert "cors" in refused.value.message_dict


def test_a_simple_request_echoes_an_allowed_origin_and_always_varies(client, upstream):
    route(upstream, CORS)

    allowed = client.get("/c", headers={"Origin": APP})
    foreign = client.get("/c", headers={"Origin": "https://evil.example.org"})
    without = client.get("/c")

    assert allowed.status_code == foreign.status_code == without.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == APP
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert allowed.headers["access-control-expose-headers"] == "X-Request-ID"
    assert allow_headers(foreign) == set() and allow_headers(without) == set()
    assert all(varies_on_origin(r) for r in (allowed, foreign, without))
    assert len(received(upstream)) == 3


def test_credentials_are_never_combined_with_a_wildcard(client, upstream):
    service = make_service("svc", upstream.url)
    with pytest.raises(ValidationError):
        make_route(service, "/c", cors={"origins": ["*"], "credentials": True})
    make_route(service, "/d", cors={"origins": [APP], "credentials": True})
    publish()

    response = client.get("/d", headers={"Origin": APP})

    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["access-control-allow-credentials"] == "true"


def test_any_origin_without_credentials_is_answered_with_a_wildcard(client, upstream):
    route(upstream, {"origins": ["*"]})

    response = client.get("/c", headers={"Origin": "https://anyone.example.net"})
    answered = preflight(client, "https://anyone.example.net")

    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers
    assert answered.status_code == 204
    assert answered.headers["access-control-allow-origin"] == "*"


def test_the_gateway_wide_block_covers_routes_without_one_and_unmatched_paths(
    client, upstream, gateway_defaults
):
    route(upstream)
    gateway_defaults(cors={"origins": [APP]})

    proxied = client.get("/c", headers={"Origin": APP})
    unmatched = client.get("/nowhere", headers={"Origin": APP})
    answered = preflight(client, APP)

    assert proxied.headers["access-control-allow-origin"] == APP
    assert unmatched.status_code == 404
    assert unmatched.json()["error"]["code"] == "route_not_found"
    assert unmatched.headers["access-control-allow-origin"] == APP
    assert answered.status_code == 204
    assert len(received(upstream)) == 1


def test_a_route_turning_cors_off_overrides_the_gateway_wide_block(
    client, upstream, gateway_defaults
):
    route(upstream, False)
    gateway_defaults(cors={"origins": [APP]})

    response = client.get("/c", headers={"Origin": APP})
    options = preflight(client, APP)

    assert allow_headers(response) == set()
    assert not varies_on_origin(response)
    # No preflight answered: a plain OPTIONS request, the upstream's to answer.
    assert options.status_code == 200 and allow_headers(options) == set()
    assert [r["method"] for r in received(upstream)] == ["GET", "OPTIONS"]


def test_the_upstreams_own_cors_headers_are_replaced(client, headers_upstream):
    headers_upstream.app.answers["/c"] = (
        200,
        [
            (b"content-type", b"text/plain"),
            (b"access-control-allow-origin", b"*"),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-expose-headers", b"X-Secret"),
        ],
        b"hello",
    )
    route(headers_upstream, {"origins": [APP]})

    allowed = client.get("/c", headers={"Origin": APP})
    foreign = client.get("/c", headers={"Origin": "https://evil.example.org"})

    assert allowed.headers.get_list("access-control-allow-origin") == [APP]
    assert "access-control-allow-credentials" not in allowed.headers
    assert "access-control-expose-headers" not in allowed.headers
    assert allow_headers(foreign) == set()
    assert "access-control-expose-headers" not in foreign.headers


def test_a_gateway_error_carries_cors_headers_so_the_browser_can_read_it(client, upstream):
    route(upstream, CORS)

    response = client.get("/c", headers={"Origin": APP, "Authorization": "Bearer not-a-real-token"})

    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["access-control-allow-credentials"] == "true"
    assert varies_on_origin(response)
    assert response.json()["error"]["code"]
    assert received(upstream) == []


def test_a_preflight_to_a_route_without_cors_reaches_the_upstream_that_answers_it(client, upstream):
    """Split routes on one path, CORS left to the upstream: the write route lists no OPTIONS,
    so the preflight for DELETE goes through the read route that does, as a plain OPTIONS."""
    service = make_service("split", upstream.url)
    make_route(service, "/split", name="split-read", methods="GET, HEAD, OPTIONS")
    make_route(service, "/split", name="split-write", methods="POST, PUT, DELETE")
    publish()

    answer = client.options(
        "/split/x",
        headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "DELETE"},
    )

    assert answer.status_code == 200
    assert received(upstream)[-1]["method"] == "OPTIONS"


@pytest.mark.parametrize(
    "pattern", ["https://*.com", "https://*.*.example.com", "https://app-*.example.com"]
)
def test_origin_patterns_that_would_match_too_much_or_slowly_are_refused(upstream, pattern):
    service = make_service("patterns", upstream.url)
    with pytest.raises(ValidationError) as refused:
        make_route(service, "/p", cors={"origin_patterns": [pattern]})
    assert "origin pattern" in str(refused.value)


def test_a_huge_origin_is_refused_at_once(client, upstream):
    route(upstream, {"origin_patterns": ["https://*.example.com"]})
    origin = "https://" + "a." * 5000 + "example.com"
    answer = client.get("/c/x", headers={"Origin": origin})
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers

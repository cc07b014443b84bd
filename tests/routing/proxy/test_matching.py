"""The match stage on compiled snapshots: which route a request reaches, or which error it gets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from routing.config.compiler import snapshot_compile
from routing.config.spec import Snapshot
from routing.proxy.context import GatewayError, RequestContext
from routing.proxy.stages.match import match


def snapshot(*routes: dict[str, Any]) -> Snapshot:
    """Compile routes (name, path, overrides) onto one service, shaped like snapshot_build."""
    service = {
        "id": 1,
        "name": "svc",
        "connect_timeout": 1,
        "read_timeout": 1,
        "write_timeout": 1,
        "retries": 0,
        "targets": [{"url": "http://127.0.0.1:9", "weight": 1}],
    }
    defaults = {
        "service_id": 1,
        "hosts": [],
        "methods": [],
        "match_type": "prefix",
        "header_matches": {},
        "priority": 0,
        "strip_prefix": False,
        "rewrite": "",
        "preserve_host": False,
        "policy": None,
        "tier": None,
    }
    data = {
        "version": 1,
        "token": "1-test",
        "built_at": 0.0,
        "services": [service],
        "routes": [{**defaults, "id": i, **r} for i, r in enumerate(routes, start=1)],
    }
    return snapshot_compile(data)


def request(
    snap: Snapshot, path: bytes, *, method: str = "GET", headers: dict[str, str] | None = None
) -> RequestContext:
    return RequestContext(
        method=method,
        scheme="http",
        raw_path=path,
        query_string=b"",
        headers=[(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        client_ip="127.0.0.1",
        receive_body=None,
        has_body=False,
        snapshot=snap,
    )


def matched(snap: Snapshot, path: bytes, **kwargs: Any) -> str:
    """The name of the route the request reaches."""
    ctx = request(snap, path, **kwargs)
    asyncio.run(match(ctx))
    assert ctx.route is not None
    return ctx.route.name


def refused(snap: Snapshot, path: bytes, **kwargs: Any) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        asyncio.run(match(request(snap, path, **kwargs)))
    return info.value


def test_it_matches_exact_routes_only_on_the_exact_path():
    snap = snapshot({"name": "exact", "path": "/users", "match_type": "exact"})

    assert matched(snap, b"/users") == "exact"
    assert refused(snap, b"/users/1").status == 404
    assert refused(snap, b"/users/").status == 404


def test_it_matches_prefix_routes_on_whole_segments():
    snap = snapshot({"name": "api", "path": "/api"})

    assert matched(snap, b"/api") == "api"
    assert matched(snap, b"/api/") == "api"
    assert matched(snap, b"/api/x/y") == "api"
    assert refused(snap, b"/apix").code == "route_not_found"


def test_it_matches_regex_routes_on_the_whole_path():
    snap = snapshot({"name": "user", "path": r"/u/[0-9]+", "match_type": "regex"})

    assert matched(snap, b"/u/42") == "user"
    assert refused(snap, b"/u/42/x").status == 404
    assert refused(snap, b"/x/u/42").status == 404


def test_it_exposes_regex_groups_to_later_stages():
    snap = snapshot({"name": "user", "path": r"/u/(?P<id>[0-9]+)", "match_type": "regex"})
    ctx = request(snap, b"/u/17")

    asyncio.run(match(ctx))

    assert ctx.route_match.group("id") == "17"


def test_it_prefers_higher_priority_over_a_longer_path():
    snap = snapshot(
        {"name": "long", "path": "/api/users"},
        {"name": "urgent", "path": "/api", "priority": 10},
    )

    assert matched(snap, b"/api/users/1") == "urgent"


def test_it_prefers_the_longer_path_at_equal_priority():
    snap = snapshot({"name": "short", "path": "/api"}, {"name": "long", "path": "/api/users"})

    assert matched(snap, b"/api/users/1") == "long"
    assert matched(snap, b"/api/orders") == "short"


def test_it_matches_an_exact_host_ignoring_port_and_case():
    snap = snapshot({"name": "host", "path": "/", "hosts": ["api.example.com"]})

    assert matched(snap, b"/x", headers={"Host": "API.Example.COM:8443"}) == "host"
    assert refused(snap, b"/x", headers={"Host": "other.example.com"}).status == 404
    assert refused(snap, b"/x").status == 404


def test_it_matches_a_wildcard_host_on_subdomains_only():
    snap = snapshot({"name": "wild", "path": "/", "hosts": ["*.example.com"]})

    assert matched(snap, b"/", headers={"Host": "a.example.com"}) == "wild"
    assert matched(snap, b"/", headers={"Host": "a.b.EXAMPLE.com:80"}) == "wild"
    assert refused(snap, b"/", headers={"Host": "example.com"}).status == 404
    assert refused(snap, b"/", headers={"Host": "badexample.com"}).status == 404


def test_it_requires_header_matches_and_falls_through_when_they_differ():
    snap = snapshot(
        {"name": "v2", "path": "/api", "priority": 5, "header_matches": {"X-Api-Version": "2"}},
        {"name": "v1", "path": "/api"},
    )

    assert matched(snap, b"/api/x", headers={"X-Api-Version": "2"}) == "v2"
    assert matched(snap, b"/api/x", headers={"X-Api-Version": "3"}) == "v1"
    assert matched(snap, b"/api/x") == "v1"


def test_it_answers_405_with_the_union_of_allowed_methods():
    snap = snapshot(
        {"name": "read", "path": "/users", "methods": ["GET", "HEAD"]},
        {"name": "write", "path": "/users", "methods": ["POST"]},
        {"name": "other", "path": "/other"},
    )

    error = refused(snap, b"/users/1", method="DELETE")

    assert error.status == 405
    assert error.code == "method_not_allowed"
    assert error.headers == [(b"allow", b"GET, HEAD, POST")]
    assert matched(snap, b"/users/1", method="POST") == "write"


def test_it_answers_404_route_not_found_when_nothing_matches():
    error = refused(snapshot({"name": "api", "path": "/api"}), b"/nothing")

    assert (error.status, error.code) == (404, "route_not_found")


def test_it_matches_paths_case_sensitively():
    snap = snapshot({"name": "api", "path": "/api"})

    assert refused(snap, b"/API/x").status == 404
    assert refused(snap, b"/Api").status == 404


def test_it_treats_a_semicolon_as_an_ordinary_character():
    snap = snapshot(
        {"name": "users", "path": "/users"},
        {"name": "matrix", "path": "/files;v=2", "match_type": "exact"},
    )

    assert refused(snap, b"/users;jsessionid=1").status == 404
    assert matched(snap, b"/users/a;b") == "users"
    assert matched(snap, b"/files;v=2") == "matrix"
    assert refused(snap, b"/files").status == 404


@pytest.mark.parametrize(
    "path", [b"/x/../admin/", b"/%2e%2e/health", b"//metrics", b"/a/../auth/x"]
)
def test_it_never_routes_a_path_that_normalises_to_a_reserved_one(path):
    snap = snapshot({"name": "all", "path": "/"})

    error = refused(snap, path)

    assert (error.status, error.code) == (404, "route_not_found")


def test_it_matches_the_normalised_path():
    snap = snapshot({"name": "users", "path": "/users", "match_type": "exact"})

    assert matched(snap, b"/x/..//%75sers") == "users"


def test_it_answers_400_invalid_path_for_a_path_it_cannot_normalise():
    error = refused(snapshot({"name": "all", "path": "/"}), b"/a/..%2Fb")

    assert (error.status, error.code) == (400, "invalid_path")


def test_it_skips_a_route_whose_regex_does_not_compile_and_keeps_the_others():
    snap = snapshot(
        {"name": "broken", "path": "/x/(", "match_type": "regex"},
        {"name": "fine", "path": "/fine"},
    )

    assert snap.skipped == ("broken",)
    assert [route.name for route in snap.routes] == ["fine"]
    assert matched(snap, b"/fine/1") == "fine"

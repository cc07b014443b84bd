"""Model validation: bad configuration is refused with a message an admin understands."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from routing.models import RateLimitTier, Route, Service, Target

pytestmark = pytest.mark.django_db


@pytest.fixture
def service() -> Service:
    return Service.objects.create(name="users")


def route(service: Service, path: str = "/api", **fields: Any) -> Route:
    return Route(service=service, name="r", path=path, **fields)


def errors(obj: Any) -> dict[str, list[str]]:
    """The messages full_clean() (what the admin runs) gives, by field; {} when valid."""
    try:
        obj.full_clean()
    except ValidationError as exc:
        return exc.message_dict
    return {}


def test_it_accepts_a_plain_route(service):
    assert errors(route(service, "/api/users", methods="GET", hosts="api.example.com")) == {}


def test_it_rejects_a_regex_that_does_not_compile(service):
    found = errors(route(service, "/users/(?P<id>[0-9]+", match_type="regex"))

    assert found["path"][0].startswith("The regular expression does not compile: missing )")


def test_it_rejects_a_path_not_starting_with_a_slash(service):
    assert errors(route(service, "api/users")) == {"path": ["A path starts with /."]}


@pytest.mark.parametrize(
    ("path", "normal"),
    [("/api//users", "/api/users"), ("/api/./v1/../users", "/api/users"), ("/café", "/caf%C3%A9")],
)
def test_it_rejects_a_path_not_in_normal_form_and_suggests_the_normal_form(service, path, normal):
    assert errors(route(service, path)) == {
        "path": [f"Write the path in its normal form: {normal}"]
    }


@pytest.mark.parametrize("path", ["/admin", "/admin/users", "/health", "/auth/x", "/metrics"])
def test_it_rejects_a_prefix_route_shadowing_a_gateway_path(service, path):
    assert errors(route(service, path)) == {
        "path": ["This path is served by the gateway itself; choose another path."]
    }


@pytest.mark.parametrize(
    ("pattern", "reserved"),
    [
        (r"/admin(/.*)?", "/admin"),
        (r"/health", "/health"),
        (r"/auth/x", "/auth"),
        (r"/.*", "/admin"),
    ],
)
def test_it_rejects_a_regex_route_shadowing_a_gateway_path(service, pattern, reserved):
    assert errors(route(service, pattern, match_type="regex")) == {
        "path": [f"This pattern would shadow the gateway's own {reserved} path."]
    }


@pytest.mark.parametrize("pattern", [r"/admin/login/", r"/auth/token", r"/metrics/[a-z]+"])
def test_it_rejects_a_regex_route_matching_only_paths_below_a_gateway_path(service, pattern):
    # Such a route could never be reached: the match stage answers 404 for every reserved path.
    assert "path" in errors(route(service, pattern, match_type="regex"))


def test_it_rejects_a_rewrite_template_with_an_unknown_group(service):
    found = errors(route(service, r"/u/(?P<id>\d+)", match_type="regex", rewrite=r"/v2/\g<uid>"))

    assert found == {"rewrite": ["The rewrite template is invalid: unknown group name 'uid'."]}


def test_it_rejects_a_rewrite_template_with_a_missing_group_number(service):
    found = errors(route(service, r"/u/(\d+)", match_type="regex", rewrite=r"/v2/\2"))

    assert found["rewrite"][0].startswith("The rewrite template is invalid: invalid group")


@pytest.mark.parametrize(
    ("path", "match_type", "rewrite"),
    [("/api", "prefix", "v2/api"), (r"/u/(?P<id>\d+)", "regex", r"profiles/\g<id>")],
)
def test_it_rejects_a_rewrite_not_starting_with_a_slash(service, path, match_type, rewrite):
    found = errors(route(service, path, match_type=match_type, rewrite=rewrite))

    assert found == {"rewrite": ["A rewrite path starts with /."]}


def test_it_rejects_strip_prefix_on_a_regex_route(service):
    found = errors(route(service, r"/u/\d+", match_type="regex", strip_prefix=True))

    assert found == {"strip_prefix": ["Regex routes rewrite with a template instead."]}


@pytest.mark.parametrize("host", ["bad host", "api.example.com:8080", "*", "a.*.com", "-a.com"])
def test_it_rejects_a_bad_host_name(service, host):
    assert errors(route(service, hosts=f"ok.example.com, {host}")) == {
        "hosts": [f"{host!r} is not a host name (use api.example.com or *.example.com)."]
    }


def test_it_rejects_an_unknown_http_method(service):
    assert errors(route(service, methods="GET, FETCH, purge")) == {
        "methods": ["Unknown method(s): FETCH, PURGE."]
    }


@pytest.mark.parametrize(
    "header_matches", [["X-Env"], {"X-Env": 2}, {"X Env": "beta"}, {"X-Env": ["a", "b"]}, "beta"]
)
def test_it_rejects_header_matches_that_are_not_header_names_to_strings(service, header_matches):
    assert errors(route(service, header_matches=header_matches)) == {
        "header_matches": ['Use an object of header name to value: {"X-Env": "beta"}.']
    }


def test_it_normalises_methods_and_hosts(service):
    r = route(service, methods="get,Post ,, delete", hosts=" API.Example.com,*.EXAMPLE.org ")

    assert errors(r) == {}
    assert r.methods == "GET, POST, DELETE"
    assert r.hosts == "api.example.com, *.example.org"


def test_it_strips_whitespace_around_the_path(service):
    r = route(service, "  /api/users ")

    assert errors(r) == {}
    assert r.path == "/api/users"


@override_settings(PORTIER_ALLOW_ENCODED_SLASHES=False)
def test_it_rejects_an_encoded_slash_in_a_path_the_gateway_would_refuse(service):
    # With encoded slashes refused, every request whose path holds %2F gets 400 invalid_path, so
    # this route could never match anything.
    assert "path" in errors(route(service, "/files/a%2Fb"))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://files.example.com", "Only http:// and https:// targets are supported."),
        ("http://api.example.com/v1?x=1", "A target URL cannot carry a query string or fragment."),
        ("http://api.example.com/#top", "A target URL cannot carry a query string or fragment."),
        ("http://user:pw@api.example.com", "Put credentials in route headers, not in the URL."),
    ],
)
def test_it_rejects_a_target_url_that_cannot_be_forwarded_to(service, url, message):
    assert message in errors(Target(service=service, url=url))["url"]


@pytest.mark.parametrize("url", ["http://10.0.0.5:8080", "https://users.example.com/api"])
def test_it_accepts_http_and_https_target_urls_with_a_base_path(service, url):
    assert errors(Target(service=service, url=url)) == {}


@pytest.mark.parametrize("rate", ["100/m", "5/15m", "1000/h", "10000/d", "3/s", " 100/m "])
def test_it_accepts_a_rate_written_as_count_per_period(rate):
    tier = RateLimitTier(name="t", rate=rate)

    assert errors(tier) == {}
    assert tier.rate == rate.strip()


@pytest.mark.parametrize("rate", ["abc", "100", "100/", "100/min", "/m", "-1/m", "1.5/m"])
def test_it_rejects_a_rate_in_any_other_form(rate):
    assert errors(RateLimitTier(name="t", rate=rate)) == {
        "rate": ["Write the rate as count/period, e.g. 100/m or 5/15m."]
    }


def test_it_rejects_a_rate_over_a_zero_length_period():
    assert "rate" in errors(RateLimitTier(name="t", rate="5/0m"))


def test_it_requires_a_header_name_for_a_header_keyed_tier():
    tier = RateLimitTier(name="t", rate="10/m", key=RateLimitTier.Key.HEADER)

    assert errors(tier) == {"header_name": ["A header-keyed tier needs a header name."]}
    tier.header_name = "X-Tenant"
    assert errors(tier) == {}


def test_a_route_saved_from_a_copy_loaded_before_a_purge_keeps_the_purge(service) -> None:
    from routing.cache_purge import purge_route_cache

    Target.objects.create(service=service, url="http://127.0.0.1:9")
    saved = route(service, cache={"ttl": 60})
    saved.save()
    loaded_before = Route.objects.get(pk=saved.pk)  # an admin form opened before the purge

    assert purge_route_cache(saved) == 1
    loaded_before.priority = 5
    loaded_before.save()

    fresh = Route.objects.get(pk=saved.pk)
    assert (fresh.priority, fresh.cache_generation) == (5, 1)

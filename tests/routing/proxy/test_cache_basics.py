"""The shared response cache end to end, what a caller sees: MISS then HIT, keys (query order,
listed parameters, listed headers, the upstream's Vary), HEAD, POST, Age, ETag and 304s."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from tests.routing.proxy.cache_upstream import cached_route

pytestmark = pytest.mark.django_db


def test_a_miss_then_a_hit_with_one_upstream_call(client, cache_upstream):
    cached_route(cache_upstream, "/c")
    first = client.get("/c/item")
    second = client.get("/c/item")
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == "HIT"
    assert second.content == first.content
    assert second.headers["content-type"] == "application/json"
    assert cache_upstream.app.calls["/c/item"] == 1


def test_query_order_does_not_matter_but_values_do(client, cache_upstream):
    cached_route(cache_upstream, "/q")
    first = client.get("/q/list?a=1&b=2")
    reordered = client.get("/q/list?b=2&a=1")
    other = client.get("/q/list?a=1&b=3")
    assert reordered.headers["x-cache"] == "HIT"
    assert reordered.json()["call"] == first.json()["call"] == 1
    assert other.headers["x-cache"] == "MISS"
    assert other.json()["query"] == "a=1&b=3"
    assert cache_upstream.app.calls["/q/list"] == 2


def test_vary_query_keys_only_on_the_listed_parameters(client, cache_upstream):
    cached_route(cache_upstream, "/vq", vary_query=["page"])
    first = client.get("/vq/list?page=1&utm=mail")
    same = client.get("/vq/list?page=1&utm=banner")
    next_page = client.get("/vq/list?page=2&utm=mail")
    assert same.headers["x-cache"] == "HIT"
    assert same.json() == first.json()
    assert next_page.headers["x-cache"] == "MISS"
    assert next_page.json()["query"] == "page=2&utm=mail"
    assert cache_upstream.app.calls["/vq/list"] == 2


def test_vary_headers_keep_separate_entries(client, cache_upstream):
    cached_route(cache_upstream, "/vh", vary_headers=["X-Tenant"])
    a = client.get("/vh/x", headers={"X-Tenant": "a"})
    b = client.get("/vh/x", headers={"X-Tenant": "b"})
    a_again = client.get("/vh/x", headers={"X-Tenant": "a"})
    b_again = client.get("/vh/x", headers={"X-Tenant": "b"})
    assert [r.headers["x-cache"] for r in (a, b, a_again, b_again)] == [
        "MISS",
        "MISS",
        "HIT",
        "HIT",
    ]
    assert a_again.json()["call"] == 1 and b_again.json()["call"] == 2
    assert cache_upstream.app.calls["/vh/x"] == 2


def test_the_upstreams_vary_gives_each_language_its_own_answer(client, cache_upstream):
    cached_route(cache_upstream, "/lang")
    cache_upstream.app.headers["/lang/page"] = [("Vary", "Accept-Language")]
    english = client.get("/lang/page", headers={"Accept-Language": "en"})
    german = client.get("/lang/page", headers={"Accept-Language": "de"})
    assert german.json()["lang"] == "de"
    english_again = client.get("/lang/page", headers={"Accept-Language": "en"})
    german_again = client.get("/lang/page", headers={"Accept-Language": "de"})
    assert english.headers["x-cache"] == german.headers["x-cache"] == "MISS"
    assert english_again.headers["x-cache"] == german_again.headers["x-cache"] == "HIT"
    assert english_again.json()["lang"] == "en"
    assert german_again.json()["lang"] == "de"
    assert english_again.headers["vary"] == "Accept-Language"
    assert cache_upstream.app.calls["/lang/page"] == 2


def test_head_is_served_from_the_get_entry_without_a_body(client, cache_upstream):
    cached_route(cache_upstream, "/h")
    client.get("/h/doc")
    head = client.head("/h/doc")
    got = client.get("/h/doc")
    assert head.status_code == 200
    assert head.headers["x-cache"] == "HIT"
    assert head.content == b""
    assert head.headers["content-type"] == "application/json"
    assert head.headers["etag"] == got.headers["etag"]
    assert cache_upstream.app.calls["/h/doc"] == 1


def test_post_bypasses_the_cache(client, cache_upstream):
    cached_route(cache_upstream, "/p")
    client.get("/p/thing")
    posted = [client.post("/p/thing", json={"n": i}) for i in range(2)]
    assert [r.headers["x-cache"] for r in posted] == ["BYPASS", "BYPASS"]
    assert [r.json()["call"] for r in posted] == [2, 3]
    assert client.get("/p/thing").json()["call"] == 1  # the GET entry is still there
    assert [r["method"] for r in cache_upstream.app.requests] == ["GET", "POST", "POST"]


def test_a_hit_carries_age_and_etag(client, cache_upstream):
    cached_route(cache_upstream, "/a")
    client.get("/a/x")
    hit = client.get("/a/x")
    again = client.get("/a/x")
    assert hit.headers["etag"].startswith('"')  # the body's hash: the upstream sent none
    assert again.headers["etag"] == hit.headers["etag"]
    assert int(hit.headers["age"]) >= 0
    assert client.get("/a/x", headers={"If-None-Match": hit.headers["etag"]}).status_code == 304


def test_the_upstreams_etag_is_kept_and_if_none_match_gets_304(client, cache_upstream):
    cached_route(cache_upstream, "/e")
    cache_upstream.app.headers["/e/x"] = [("ETag", '"v1"')]
    first = client.get("/e/x")
    assert first.headers["etag"] == '"v1"'
    unchanged = client.get("/e/x", headers={"If-None-Match": '"v1"'})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    assert unchanged.headers["etag"] == '"v1"'
    assert unchanged.headers["x-cache"] == "HIT"
    changed = client.get("/e/x", headers={"If-None-Match": '"v0", W/"old"'})
    assert changed.status_code == 200
    assert changed.content == first.content
    assert cache_upstream.app.calls["/e/x"] == 1


def test_a_304_from_the_cache_varies_on_accept_encoding_as_its_200_does(
    client, cache_upstream, gateway_defaults
):
    """Else a shared cache in front, refreshing its plain copy with this 304, would keep
    handing that copy to clients that take gzip (RFC 9110 15.4.5: a 304 carries the Vary its
    200 would)."""
    gateway_defaults(compression=True, compression_min_bytes=10)
    cached_route(cache_upstream, "/ev")
    cache_upstream.app.headers["/ev/x"] = [("ETag", '"v1"')]
    whole = client.get("/ev/x", headers={"Accept-Encoding": "identity"})
    assert "accept-encoding" in whole.headers["vary"].lower()
    for accept in ("identity", "gzip"):
        unchanged = client.get(
            "/ev/x", headers={"If-None-Match": '"v1"', "Accept-Encoding": accept}
        )
        assert (unchanged.status_code, unchanged.headers["x-cache"]) == (304, "HIT")
        assert "accept-encoding" in unchanged.headers["vary"].lower()


def test_if_modified_since_uses_the_upstreams_last_modified(client, cache_upstream):
    cached_route(cache_upstream, "/m")
    modified = formatdate(1_700_000_000, usegmt=True)
    cache_upstream.app.headers["/m/x"] = [("Last-Modified", modified)]
    client.get("/m/x")
    unchanged = client.get("/m/x", headers={"If-Modified-Since": modified})
    assert unchanged.status_code == 304
    assert unchanged.headers["last-modified"] == modified
    earlier = formatdate(1_600_000_000, usegmt=True)
    newer = client.get("/m/x", headers={"If-Modified-Since": earlier})
    assert newer.status_code == 200
    assert newer.json()["call"] == 1
    assert cache_upstream.app.calls["/m/x"] == 1


def test_a_conditional_miss_stores_the_whole_answer_and_gets_304_itself(client, cache_upstream):
    cached_route(cache_upstream, "/cm")
    cache_upstream.app.headers["/cm/x"] = [("ETag", '"v7"')]
    miss = client.get("/cm/x", headers={"If-None-Match": '"v7"'})
    assert miss.status_code == 304
    assert miss.headers["x-cache"] == "MISS"
    assert miss.headers["etag"] == '"v7"'
    assert miss.content == b""
    # The upstream was asked for the whole answer, which was stored for the next caller.
    assert "if-none-match" not in cache_upstream.app.requests[0]["headers"]
    whole = client.get("/cm/x")
    assert whole.status_code == 200
    assert whole.headers["x-cache"] == "HIT"
    assert whole.json()["call"] == 1
    assert cache_upstream.app.calls["/cm/x"] == 1


def test_a_conditional_miss_that_does_not_match_gets_the_whole_answer(client, cache_upstream):
    cached_route(cache_upstream, "/cn")
    cache_upstream.app.headers["/cn/x"] = [("ETag", '"v2"')]
    miss = client.get("/cn/x", headers={"If-None-Match": '"v1"'})
    assert miss.status_code == 200
    assert miss.json()["call"] == 1
    assert client.get("/cn/x").headers["x-cache"] == "HIT"


def test_a_repeated_parameters_values_keep_their_order(client, cache_upstream):
    cached_route(cache_upstream, "/rp")
    client.get("/rp/list?sort=name&sort=date")
    other_order = client.get("/rp/list?sort=date&sort=name")
    assert other_order.headers["x-cache"] == "MISS"
    assert other_order.json()["query"] == "sort=date&sort=name"
    assert client.get("/rp/list?sort=name&sort=date").headers["x-cache"] == "HIT"

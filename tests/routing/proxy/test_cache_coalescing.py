"""Concurrent misses for one key make one upstream call, in one gateway process or across
several, and a stale entry stands in for an upstream that fails (an error, a refused connection,
a timeout), for `stale_if_error` seconds and no longer."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.conftest import make_route, make_service, publish
from tests.routing.proxy.cache_upstream import (
    SAME_HOST,
    CacheUpstream,
    cached_route,
    serving_latest,
    wait_for,
)
from tests.servers import ServerThread, gateway_processes

pytestmark = pytest.mark.django_db


def concurrently(url: str, requests: list[dict[str, str]]) -> list[httpx.Response]:
    """Send GET `url` once per headers dict, all at once, each on a connection of its own."""
    return at_once([(url, headers) for headers in requests])


def at_once(gets: list[tuple[str, dict[str, str]]]) -> list[httpx.Response]:
    """Send each GET (url, headers) all at once, each on a connection of its own."""

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(gets), max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            return await asyncio.gather(*(http.get(url, headers=h) for url, h in gets))

    return asyncio.run(run())


def test_fifty_concurrent_misses_make_one_upstream_call(gateway, cache_upstream):
    cached_route(cache_upstream, "/slow")
    cache_upstream.app.delay["/slow/x"] = 0.5
    answers = concurrently(gateway.url + "/slow/x", [{}] * 50)
    assert [a.status_code for a in answers] == [200] * 50
    assert cache_upstream.app.calls["/slow/x"] == 1
    assert {a.content for a in answers} == {answers[0].content}
    assert sorted(a.headers["x-cache"] for a in answers) == ["HIT"] * 49 + ["MISS"]


def test_concurrent_misses_on_two_gateway_processes_make_one_upstream_call(cache_upstream):
    cached_route(cache_upstream, "/shared")
    cache_upstream.app.delay["/shared/x"] = 1.0  # every miss arrives while the first is out
    with gateway_processes(2) as urls, httpx.Client(timeout=10) as http:
        for url in urls:
            wait_for(lambda url=url: serving_latest(http, url))
        started = time.monotonic()
        answers = at_once([(url + "/shared/x", SAME_HOST) for url in urls for _ in range(8)])
        elapsed = time.monotonic() - started
    assert [a.status_code for a in answers] == [200] * 16
    assert cache_upstream.app.calls["/shared/x"] == 1
    assert {a.content for a in answers} == {answers[0].content}
    assert sorted(a.headers["x-cache"] for a in answers) == ["HIT"] * 15 + ["MISS"]
    # The process that did not call the upstream served all its callers from the other's entry,
    # long before a waiter gives up (PORTIER_CACHE_COALESCE_WAIT, 10 s) and asks for itself.
    by_process = [{a.headers["x-cache"] for a in answers[i : i + 8]} for i in (0, 8)]
    assert {"HIT"} in by_process
    assert elapsed < 6


def test_concurrent_misses_under_the_upstreams_vary_each_get_their_own_variant(
    gateway, cache_upstream
):
    cached_route(cache_upstream, "/vslow")
    cache_upstream.app.delay["/vslow/x"] = 0.5
    cache_upstream.app.headers["/vslow/x"] = [("Vary", "Accept-Language")]
    languages = ["en", "de", "fr"] * 8
    answers = concurrently(
        gateway.url + "/vslow/x", [{"Accept-Language": lang} for lang in languages]
    )
    assert [a.json()["lang"] for a in answers] == languages
    # Each language's entry is stored: no further upstream call for any of them.
    calls = cache_upstream.app.calls["/vslow/x"]
    for lang in ("en", "de", "fr"):
        again = concurrently(gateway.url + "/vslow/x", [{"Accept-Language": lang}])[0]
        assert again.json()["lang"] == lang
    assert cache_upstream.app.calls["/vslow/x"] == calls


def test_a_stale_entry_is_served_while_the_upstream_answers_errors(client, cache_upstream):
    cached_route(cache_upstream, "/st", ttl=1, stale_if_error=30)
    first = client.get("/st/x")
    cache_upstream.app.status["/st/x"] = 503
    # Once the entry is past its freshness, the upstream is asked, fails, and the old answer
    # stands in for it.
    stale = wait_for(lambda: _with_cache(client.get("/st/x"), "STALE"), seconds=10)
    assert stale.status_code == 200
    assert stale.content == first.content
    assert int(stale.headers["age"]) >= 1
    assert cache_upstream.app.calls["/st/x"] >= 2
    # The upstream recovers: its new answer replaces the stale one.
    cache_upstream.app.status.pop("/st/x")
    fresh = client.get("/st/x")
    assert fresh.headers["x-cache"] == "MISS"
    assert fresh.json()["call"] > first.json()["call"]


def test_a_stale_entry_is_served_while_the_upstream_is_down(client, cache_upstream):
    app = CacheUpstream()
    server = ServerThread(app).start()
    try:
        cached_route(server, "/gone", ttl=1, stale_if_error=30)
        first = client.get("/gone/x")
        assert first.status_code == 200
    finally:
        server.stop()
    stale = wait_for(lambda: _with_cache(client.get("/gone/x"), "STALE"), seconds=10)
    assert stale.status_code == 200
    assert stale.content == first.content


def test_a_stale_entry_is_served_when_the_upstream_times_out(client, cache_upstream):
    # No retry and no circuit breaker: each failure below is the read timeout, nothing else.
    service = make_service(
        "svc-slow", cache_upstream.url, read_timeout=0.5, retries=0, breaker_failures=0
    )
    make_route(service, "/late", cache={"ttl": 1, "stale_if_error": 30})
    publish()
    first = client.get("/late/x")
    cache_upstream.app.delay["/late/x"] = cache_upstream.app.delay["/late/y"] = 5.0

    def timed() -> tuple[httpx.Response, float]:
        started = time.monotonic()
        return client.get("/late/x"), time.monotonic() - started

    # Once the entry is past its freshness, the upstream is asked, says nothing within the
    # read timeout, and the old answer stands in for it, well before the upstream's 5 s.
    stale, took = wait_for(lambda: _stale(timed()), seconds=15)
    assert stale.status_code == 200
    assert stale.content == first.content
    assert 0.4 < took < 3
    assert cache_upstream.app.calls["/late/x"] == 2
    # Without the stale entry the same timeout is the caller's answer.
    late = client.get("/late/y")
    assert late.status_code == 504
    assert late.json()["error"]["code"] == "upstream_timeout"


def _stale(timed: tuple[httpx.Response, float]) -> tuple[httpx.Response, float] | None:
    return timed if timed[0].headers.get("x-cache") == "STALE" else None


def test_without_stale_if_error_the_upstreams_error_is_answered(client, cache_upstream):
    cached_route(cache_upstream, "/nostale", ttl=1)
    first = client.get("/nostale/x")
    assert first.status_code == 200
    cache_upstream.app.status["/nostale/x"] = 503
    failed = wait_for(lambda: _with_status(client.get("/nostale/x"), 503), seconds=10)
    assert failed.json()["call"] == 2  # the upstream's own error body, not the old answer
    assert failed.headers["x-cache"] == "MISS"


def test_past_the_stale_window_the_error_is_answered(client, cache_upstream):
    cached_route(cache_upstream, "/window", ttl=1, stale_if_error=2)
    first = client.get("/window/x")
    stored = time.monotonic()
    cache_upstream.app.status["/window/x"] = 503
    stale = wait_for(lambda: _with_cache(client.get("/window/x"), "STALE"), seconds=10)
    assert stale.content == first.content
    failed = wait_for(lambda: _with_status(client.get("/window/x"), 503), seconds=15)
    # The upstream's 503, or the gateway's own once its circuit opened: an error either way.
    assert failed.content != first.content
    assert failed.headers.get("x-cache") != "STALE"
    assert time.monotonic() - stored >= 3  # freshness (1 s) and the stale window (2 s) over


def _with_cache(response: httpx.Response, result: str) -> httpx.Response | None:
    return response if response.headers.get("x-cache") == result else None


def _with_status(response: httpx.Response, status: int) -> httpx.Response | None:
    return response if response.status_code == status else None

"""A route saved in the admin is served by every gateway process within a second, as deployed:
separate processes, the default poll interval, configuration reaching them only through Redis."""

from __future__ import annotations

import time

import httpx
import pytest
from django.core.cache import cache

from routing.config.publish import VERSION_KEY
from tests.conftest import make_service
from tests.routing.test_admin import route_form
from tests.servers import ServerThread, gateway_processes

ROUNDS = 3


def serves(http: httpx.Client, url: str, token: str) -> bool:
    return http.get(url + "/health").json()["config"]["token"] == token


def wait_until_served(http: httpx.Client, urls: list[str], path: str, seconds: float) -> float:
    """Seconds until every process answers `path` from the upstream (inf if one never did)."""
    started = time.monotonic()
    waiting = set(urls)
    while waiting and time.monotonic() - started < seconds:
        for url in list(waiting):
            if http.get(url + path).headers.get("x-upstream") == "up-a":
                waiting.discard(url)
        time.sleep(0.005)
    return float("inf") if waiting else time.monotonic() - started


@pytest.mark.django_db(transaction=True)
def test_a_route_saved_in_the_admin_is_served_by_every_process_within_a_second(
    admin_client, upstream: ServerThread
):
    service = make_service("propagated", upstream.url)
    with (
        gateway_processes(2, fast_poll=False) as urls,
        httpx.Client(timeout=2) as http,
    ):
        deadline = time.monotonic() + 10
        while not all(serves(http, url, cache.get(VERSION_KEY)) for url in urls):
            assert time.monotonic() < deadline, "the processes did not load the configuration"
            time.sleep(0.05)

        took = []
        for i in range(ROUNDS):
            response = admin_client.post(
                "/admin/routing/route/add/",
                route_form(name=f"propagated-{i}", service=service.pk, path=f"/propagated-{i}"),
            )
            assert response.status_code == 302  # saved (and published on commit)
            took.append(wait_until_served(http, urls, f"/propagated-{i}/x", seconds=5))

    print(f"\npropagation to both processes (s): {', '.join(f'{t:.3f}' for t in took)}")
    assert max(took) < 1.0, took

"""Rate-limit tiers, client IPs, load shedding and a dead Redis, end to end."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jwt
import pytest
from django.conf import settings
from django.contrib.auth.models import Group

from routing.config.holder import holder
from routing.models import RateLimitTier, RolePolicy, RouteTierOverride
from routing.proxy.stages import limits
from tests.conftest import make_route, make_service, publish, received
from tests.servers import free_port, gateway_processes

pytestmark = pytest.mark.django_db


def tier(rate: str, key: str = "route", **fields: Any) -> RateLimitTier:
    return RateLimitTier.objects.create(
        name=f"t{RateLimitTier.objects.count()}-{key}", rate=rate, key=key, **fields
    )


def token(subject: int, roles: list[str]) -> dict[str, str]:
    claims = {
        "user_id": subject,
        "roles": roles,
        "token_type": "access",
        "exp": int(time.time()) + 300,
    }
    raw = jwt.encode(claims, settings.PORTIER_JWT_SIGNING_KEY, algorithm="HS256")
    return {"Authorization": f"Bearer {raw}"}


@pytest.fixture(autouse=True)
def _redis_reachable_again() -> Iterator[None]:
    yield
    limits._down_until = 0.0  # a test that killed Redis must not leave the next one skipping it


def test_it_counts_down_in_headers_and_answers_429_with_retry_after(client, upstream):
    make_route(make_service("svc", upstream.url), "/l", rate_limit_tier=tier("3/h"))
    publish()

    answers = [client.get("/l") for _ in range(4)]

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert {a.headers["ratelimit-limit"] for a in answers} == {"3"}
    assert {a.headers["ratelimit-policy"] for a in answers} == {"3;w=3600"}
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limited"
    reset = int(refused.headers["ratelimit-reset"])
    assert 0 < reset <= 3600
    assert abs(int(refused.headers["retry-after"]) - reset) <= 1
    assert len(received(upstream)) == 3


def test_a_route_without_a_tier_carries_no_rate_limit_headers(client, upstream):
    make_route(make_service("svc", upstream.url), "/free")
    publish()

    assert "ratelimit-limit" not in client.get("/free").headers


def test_an_upstream_error_on_a_limited_route_still_carries_the_headers(client, dead_url):
    make_route(make_service("down", dead_url), "/down", rate_limit_tier=tier("5/h"))
    publish()

    response = client.get("/down")

    assert response.status_code == 502
    assert response.headers["ratelimit-remaining"] == "4"


def test_callers_with_a_role_get_the_override_tier(client, upstream):
    premium = Group.objects.create(name="premium")
    anyone = RolePolicy.objects.create(name="anyone", kind=RolePolicy.Kind.AUTHENTICATED)
    route = make_route(
        make_service("svc", upstream.url),
        "/api",
        role_policy=anyone,
        rate_limit_tier=tier("2/h", key="user"),
    )
    RouteTierOverride.objects.create(route=route, role=premium, tier=tier("5/h", key="user"))
    publish()

    basic = [client.get("/api", headers=token(1, ["basic"])).status_code for _ in range(5)]
    paying = [client.get("/api", headers=token(2, ["premium"])).status_code for _ in range(6)]

    assert basic == [200, 200, 429, 429, 429]
    assert paying == [200] * 5 + [429]


def test_each_user_has_a_budget_of_their_own(client, upstream):
    anyone = RolePolicy.objects.create(name="anyone", kind=RolePolicy.Kind.AUTHENTICATED)
    make_route(
        make_service("svc", upstream.url),
        "/u",
        role_policy=anyone,
        rate_limit_tier=tier("2/h", key="user"),
    )
    publish()

    first = [client.get("/u", headers=token(1, [])).status_code for _ in range(3)]
    second = [client.get("/u", headers=token(2, [])).status_code for _ in range(3)]

    assert first == second == [200, 200, 429]


def test_ip_budgets_follow_x_forwarded_for_only_through_trusted_proxies(client, upstream, settings):
    make_route(make_service("svc", upstream.url), "/ip", rate_limit_tier=tier("2/h", key="ip"))
    publish()

    # Untrusted peer: a client rotating X-Forwarded-For stays one client.
    rotating = [
        client.get("/ip", headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code
        for i in range(3)
    ]
    assert rotating == [200, 200, 429]

    # Behind a trusted proxy (the test client's 127.0.0.1), the header names the client.
    settings.PORTIER_TRUSTED_PROXIES = ["127.0.0.0/8"]
    alice = [
        client.get("/ip", headers={"X-Forwarded-For": "203.0.113.1"}).status_code for _ in range(3)
    ]
    bob = [
        client.get("/ip", headers={"X-Forwarded-For": "evil, 203.0.113.2"}).status_code
        for _ in range(3)
    ]
    assert alice == bob == [200, 200, 429]
    # The upstream still learns the whole chain, with the real peer appended.
    chain = dict(received(upstream)[-1]["headers"])["x-forwarded-for"]
    assert chain == "evil, 203.0.113.2, 127.0.0.1"


def test_per_method_tiers_count_each_method_apart(client, upstream):
    make_route(
        make_service("svc", upstream.url), "/pm", rate_limit_tier=tier("1/h", per_method=True)
    )
    publish()

    assert [client.get("/pm").status_code, client.get("/pm").status_code] == [200, 429]
    assert client.post("/pm", content=b"x").status_code == 200


@pytest.mark.parametrize("backend", ["async", "thread"])
def test_exactly_the_limit_passes_under_concurrent_load(client, upstream, settings, backend):
    settings.PORTIER_RATELIMIT_BACKEND = backend
    make_route(make_service("svc", upstream.url), "/c", rate_limit_tier=tier("10/h"))
    publish()

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = Counter(pool.map(lambda _: client.get("/c").status_code, range(16)))

    assert statuses == Counter({200: 10, 429: 6})


@pytest.fixture(scope="module")
def two_gateways(django_db_setup: Any) -> Iterator[list[str]]:
    """Two more gateway processes sharing this test run's Redis (and nothing else)."""
    with gateway_processes() as urls:
        yield urls


def _serving(url: str, token: str) -> bool:
    return httpx.get(url + "/health", timeout=2).json()["config"]["token"] == token


def test_two_gateway_processes_share_one_budget_exactly(two_gateways, upstream):
    make_route(make_service("svc", upstream.url), "/shared", rate_limit_tier=tier("10/h"))
    publish()
    deadline = time.monotonic() + 5
    while not all(_serving(url, holder.current.token) for url in two_gateways):
        assert time.monotonic() < deadline, "processes did not load the configuration"
        time.sleep(0.05)

    def hit(i: int) -> int:
        return httpx.get(two_gateways[i % 2] + "/shared", timeout=10).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = Counter(pool.map(hit, range(20)))

    assert statuses == Counter({200: 10, 429: 10})


def test_a_service_at_its_in_flight_cap_sheds_load(client, upstream):
    make_route(make_service("slow", upstream.url, max_in_flight=2), "/", match_type="prefix")
    publish()

    with ThreadPoolExecutor(max_workers=5) as pool:
        answers = list(pool.map(lambda _: client.get("/_slow", params={"seconds": "1"}), range(5)))

    statuses = Counter(a.status_code for a in answers)
    assert statuses == Counter({200: 2, 503: 3})
    shed = [a for a in answers if a.status_code == 503]
    assert {a.json()["error"]["code"] for a in shed} == {"overloaded"}
    assert {a.headers["retry-after"] for a in shed} == {"1"}
    assert len(received(upstream)) == 2
    # Finished requests free their slots.
    assert client.get("/_slow", params={"seconds": "0"}).status_code == 200


class RedisServer:
    """A Redis of the test's own, which it can stop and start again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed for this test"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}", timeout=0.2)
            except httpx.RemoteProtocolError:
                return  # something answers on the port
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            else:
                return

    def stop(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


@pytest.fixture
def own_redis(settings) -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    settings.PORTIER_RATELIMIT_REDIS_URL = server.url
    yield server
    if server.process and server.process.poll() is None:
        server.stop()


def test_a_dead_redis_fails_open_by_default_without_hanging(client, upstream, own_redis, settings):
    make_route(make_service("svc", upstream.url), "/r", rate_limit_tier=tier("100/h"))
    publish()
    assert client.get("/r").headers["ratelimit-remaining"] == "99"

    own_redis.stop()
    timings = []
    for _ in range(5):
        started = time.monotonic()
        response = client.get("/r")
        timings.append(time.monotonic() - started)
        assert response.status_code == 200
        assert "ratelimit-remaining" not in response.headers

    assert max(timings) < 1.0


def test_a_dead_redis_fails_closed_when_configured_and_recovers(
    client, upstream, own_redis, settings
):
    settings.PORTIER_RATELIMIT_FAIL = "closed"
    settings.PORTIER_RATELIMIT_RETRY_AFTER_FAILURE = 0.3
    make_route(make_service("svc", upstream.url), "/r", rate_limit_tier=tier("100/h"))
    publish()
    assert client.get("/r").status_code == 200

    own_redis.stop()
    started = time.monotonic()
    refused = client.get("/r")
    assert time.monotonic() - started < 1.0
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "rate_limit_unavailable"
    assert refused.headers["retry-after"] == "1"

    own_redis.start()
    deadline = time.monotonic() + 5
    while client.get("/r").status_code != 200:
        assert time.monotonic() < deadline, "rate limiting did not recover with Redis"
        time.sleep(0.1)


def test_a_report_only_tier_never_fails_closed(client, upstream, own_redis, settings):
    settings.PORTIER_RATELIMIT_FAIL = "closed"
    make_route(
        make_service("svc", upstream.url), "/r", rate_limit_tier=tier("100/h", report_only=True)
    )
    publish()
    assert client.get("/r").status_code == 200

    own_redis.stop()
    served = client.get("/r")

    assert served.status_code == 200  # a limit that is only reported never refuses
    assert len(received(upstream)) == 2

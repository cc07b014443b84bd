"""Load balancing, retries, the time budget and the passive circuit breaker, end to end.

Every test gives its service a fresh name: health state (circuits, failure counts) is kept per
service and target URL, in Redis and in the gateway process, and the upstreams outlive a test.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from routing.management.echo_upstream import EchoUpstream
from routing.models import Service, Target
from tests.conftest import make_route, make_service, publish, received
from tests.servers import ServerThread

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def _third_server() -> Iterator[ServerThread]:
    server = ServerThread(EchoUpstream("up-c")).start()
    yield server
    server.stop()


@pytest.fixture
def upstream_c(_third_server: ServerThread) -> ServerThread:
    _third_server.server.config.app.received.clear()
    _third_server.server.config.app.status_override = None
    return _third_server


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=32) as executor:
        yield executor


def service(*urls: str, **fields: Any) -> Service:
    return make_service(f"bal-{uuid.uuid4().hex[:10]}", *urls, **fields)


def answer(server: ServerThread, status: int | None) -> None:
    """Make the upstream answer every request with this status (None: normally)."""
    server.server.config.app.status_override = status


def served_by(responses: list[httpx.Response]) -> Counter[str]:
    return Counter(r.headers.get("x-upstream", "gateway") for r in responses)


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


def get_many(
    pool: ThreadPoolExecutor, client: httpx.Client, path: str, count: int
) -> list[httpx.Response]:
    """Send count GETs, several at a time: each still makes one pick, so turns stay exact."""
    return list(pool.map(lambda _: client.get(path), range(count)))


def wait_until(condition: Any, seconds: float = 8.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {seconds}s")
        time.sleep(every)


def send_until(client: httpx.Client, path: str, condition: Any) -> None:
    """GET path until condition() holds: a request is also what asks for a half-open trial."""
    wait_until(lambda: condition() or client.get(path) is None)


# Picking a target


def test_it_takes_turns_over_the_targets_with_round_robin(
    client, upstream, upstream_b, upstream_c, pool
):
    make_route(
        service(upstream.url, upstream_b.url, upstream_c.url, balancing="round_robin"), "/rr"
    )
    publish()

    answers = get_many(pool, client, "/rr", 90)

    assert {a.status_code for a in answers} == {200}
    assert served_by(answers) == {"up-a": 30, "up-b": 30, "up-c": 30}
    assert [len(received(s)) for s in (upstream, upstream_b, upstream_c)] == [30, 30, 30]


def test_it_shares_traffic_by_weight(client, upstream, upstream_b, pool):
    svc = service(balancing="weighted")
    Target.objects.create(service=svc, url=upstream.url, weight=100)
    Target.objects.create(service=svc, url=upstream_b.url, weight=300)
    make_route(svc, "/w")
    publish()

    seen = served_by(get_many(pool, client, "/w", 200))

    assert seen["up-a"] + seen["up-b"] == 200
    assert 40 <= seen["up-a"] <= 60
    assert 140 <= seen["up-b"] <= 160


def test_it_honours_weights_over_more_than_two_targets(
    client, upstream, upstream_b, upstream_c, pool
):
    svc = service(balancing="weighted")
    for server, weight in ((upstream, 100), (upstream_b, 200), (upstream_c, 300)):
        Target.objects.create(service=svc, url=server.url, weight=weight)
    make_route(svc, "/w3")
    publish()

    seen = served_by(get_many(pool, client, "/w3", 240))

    assert sum(seen.values()) == 240
    assert 30 <= seen["up-a"] <= 50
    assert 70 <= seen["up-b"] <= 90
    assert 110 <= seen["up-c"] <= 130


def test_it_sends_quick_requests_to_the_idle_target_with_least_in_flight(
    client, upstream, upstream_b, upstream_c, pool
):
    make_route(
        service(upstream.url, upstream_b.url, upstream_c.url, balancing="least_in_flight"),
        "/lif",
        strip_prefix=True,
    )
    publish()
    servers = (upstream, upstream_b, upstream_c)

    slow = [pool.submit(client.get, "/lif/_slow?seconds=3") for _ in range(2)]
    wait_until(lambda: sum(len(received(s)) for s in servers) == 2)
    busy = {s.server.config.app.name for s in servers if received(s)}
    quick = [client.get("/lif/quick") for _ in range(6)]

    assert len(busy) == 2  # the second slow request went to a target with nothing in flight
    (idle,) = {"up-a", "up-b", "up-c"} - busy
    assert served_by(quick) == {idle: 6}
    assert {f.result().status_code for f in slow} == {200}


def test_it_spreads_least_in_flight_ties_over_every_target(client, upstream, upstream_b):
    make_route(service(upstream.url, upstream_b.url, balancing="least_in_flight"), "/tie")
    publish()

    seen = served_by([client.get("/tie") for _ in range(20)])

    assert seen["up-a"] >= 5
    assert seen["up-b"] >= 5


# Consistent hashing


TENANTS = [f"tenant-{n}" for n in range(60)]


def tenants_map(client: httpx.Client, path: str, tenants: list[str]) -> dict[str, str]:
    """Which upstream answered each tenant (X-Tenant), sent several at a time."""

    def one(tenant: str) -> str:
        return client.get(path, headers={"X-Tenant": tenant}).headers.get("x-upstream", "gateway")

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(tenants, pool.map(one, tenants), strict=True))


def hashing_on_tenant(*urls: str, **fields: Any) -> Service:
    return service(
        *urls, balancing="consistent_hash", hash_on="header", hash_header="X-Tenant", **fields
    )


def test_it_keeps_each_header_value_on_one_target(client, upstream, upstream_b, upstream_c):
    make_route(hashing_on_tenant(upstream.url, upstream_b.url, upstream_c.url), "/ch")
    publish()
    tenants = TENANTS

    first = tenants_map(client, "/ch", tenants)
    again = tenants_map(client, "/ch", list(reversed(tenants)))

    assert again == first
    assert set(first.values()) == {"up-a", "up-b", "up-c"}
    assert min(Counter(first.values()).values()) >= 5


def test_it_moves_only_the_keys_of_a_removed_target(client, upstream, upstream_b, upstream_c):
    svc = hashing_on_tenant(upstream.url, upstream_b.url, upstream_c.url)
    make_route(svc, "/ch")
    publish()
    tenants = TENANTS
    before = tenants_map(client, "/ch", tenants)

    Target.objects.filter(service=svc, url=upstream_c.url).update(enabled=False)
    publish()
    after = tenants_map(client, "/ch", tenants)

    moved = {t for t in tenants if after[t] != before[t]}
    assert moved == {t for t in tenants if before[t] == "up-c"}
    assert moved
    assert set(after.values()) == {"up-a", "up-b"}


def test_it_moves_only_the_keys_of_a_killed_target_once_its_circuit_opens(client):
    servers = [ServerThread(EchoUpstream(f"up-{n}")).start() for n in range(3)]
    try:
        make_route(
            hashing_on_tenant(
                *(s.url for s in servers),
                retries=1,
                breaker_failures=1,
                breaker_cooldown=60,
            ),
            "/ch",
        )
        publish()
        tenants = TENANTS
        before = tenants_map(client, "/ch", tenants)
        assert set(before.values()) == {"up-0", "up-1", "up-2"}

        servers[2].stop()
        after = tenants_map(client, "/ch", tenants)
        again = tenants_map(client, "/ch", tenants)
    finally:
        for server in servers:
            server.stop()

    moved = {t for t in tenants if after[t] != before[t]}
    assert moved == {t for t in tenants if before[t] == "up-2"}
    assert set(after.values()) == {"up-0", "up-1"}  # the retry carried the first one over
    assert again == after
    assert sum(len(received(s)) for s in servers) == 60 + 120


def test_it_keeps_a_client_ip_on_one_target(client, upstream, upstream_b, upstream_c):
    make_route(
        service(
            upstream.url,
            upstream_b.url,
            upstream_c.url,
            balancing="consistent_hash",
            hash_on="client_ip",
        ),
        "/ip",
    )
    publish()

    seen = served_by([client.get("/ip") for _ in range(20)])

    assert len(seen) == 1
    assert sum(seen.values()) == 20


def test_it_takes_turns_when_the_hashed_header_is_missing(
    client, upstream, upstream_b, upstream_c, pool
):
    make_route(hashing_on_tenant(upstream.url, upstream_b.url, upstream_c.url), "/ch")
    publish()

    seen = served_by(get_many(pool, client, "/ch", 30))

    assert seen == {"up-a": 10, "up-b": 10, "up-c": 10}


# No target left


def test_it_answers_503_without_dialing_targets_whose_circuits_are_open(client, upstream, dead_url):
    answer(upstream, 503)
    make_route(
        service(
            upstream.url,
            dead_url,
            balancing="round_robin",
            retries=1,
            retry_statuses="503",
            breaker_failures=1,
            breaker_cooldown=60,
        ),
        "/none",
    )
    publish()

    first = client.get("/none")  # tries both: one answers 503, the other refuses
    later = [client.get("/none") for _ in range(3)]

    assert first.status_code in (502, 503)
    assert len(received(upstream)) == 1
    assert [r.status_code for r in later] == [503, 503, 503]
    assert {error_code(r) for r in later} == {"upstream_unavailable"}
    assert {r.headers["content-type"] for r in later} == {"application/json"}


def test_it_answers_503_when_the_service_has_no_enabled_target(client, upstream):
    svc = service()
    Target.objects.create(service=svc, url=upstream.url, enabled=False)
    make_route(svc, "/empty")
    publish()

    response = client.get("/empty")

    assert response.status_code == 503
    assert error_code(response) == "upstream_unavailable"
    assert received(upstream) == []


# Retries


def test_it_retries_a_get_on_the_next_target_when_one_refuses(client, upstream, dead_url):
    make_route(
        service(upstream.url, dead_url, balancing="round_robin", retries=1, breaker_failures=0),
        "/r",
    )
    publish()

    answers = [client.get("/r") for _ in range(4)]  # turns alternate: most start on the dead one

    assert [a.status_code for a in answers] == [200] * 4
    assert len(received(upstream)) == 4


def test_it_never_sends_a_post_twice(client, upstream, upstream_b):
    answer(upstream, 503)
    make_route(
        service(
            upstream.url,
            upstream_b.url,
            balancing="round_robin",
            retries=2,
            retry_statuses="503",
            breaker_failures=0,
        ),
        "/p",
    )
    publish()

    posts = [client.post("/p", json={"n": n}) for n in range(4)]

    assert Counter(p.status_code for p in posts) == {503: 2, 200: 2}
    assert len(received(upstream)) == 2
    assert len(received(upstream_b)) == 2
    assert sorted(r["body"] for r in received(upstream) + received(upstream_b)) == [
        f'{{"n":{n}}}' for n in range(4)
    ]


def test_it_retries_a_get_answered_with_a_retry_status(client, upstream, upstream_b):
    answer(upstream, 503)
    make_route(
        service(
            upstream.url,
            upstream_b.url,
            balancing="round_robin",
            retries=1,
            retry_statuses="503",
            breaker_failures=0,
        ),
        "/g",
    )
    publish()

    answers = [client.get("/g") for _ in range(4)]

    assert [a.status_code for a in answers] == [200] * 4
    assert served_by(answers) == {"up-b": 4}
    assert len(received(upstream_b)) == 4
    assert len(received(upstream)) >= 2  # every other turn starts on the failing one


def test_it_does_not_retry_when_retries_is_zero(client, upstream, upstream_b, dead_url):
    answer(upstream, 503)
    make_route(
        service(
            upstream.url,
            upstream_b.url,
            balancing="round_robin",
            retries=0,
            retry_statuses="503",
            breaker_failures=0,
        ),
        "/z",
    )
    make_route(
        service(dead_url, upstream_b.url, balancing="round_robin", retries=0, breaker_failures=0),
        "/zd",
    )
    publish()

    answers = [client.get("/z") for _ in range(4)]
    refused = [client.get("/zd") for _ in range(4)]

    assert Counter(a.status_code for a in answers) == {503: 2, 200: 2}
    assert len(received(upstream)) == 2
    assert Counter(r.status_code for r in refused) == {502: 2, 200: 2}
    assert len(received(upstream_b)) == 2 + 2


def test_it_retries_a_small_post_on_a_route_that_allows_it(client, upstream, upstream_b):
    answer(upstream, 503)
    make_route(
        service(
            upstream.url,
            upstream_b.url,
            balancing="round_robin",
            retries=1,
            retry_statuses="503",
            breaker_failures=0,
        ),
        "/up",
        retry_unsafe_methods=True,
    )
    publish()
    body = bytes(range(65, 91)) * 1000  # 26 kB, under the 64 KiB held for a retry

    posts = [client.post("/up", content=body) for _ in range(4)]

    assert [p.status_code for p in posts] == [200] * 4
    assert len(received(upstream_b)) == 4
    assert len(received(upstream)) >= 2
    for seen in received(upstream) + received(upstream_b):
        assert seen["body_bytes"] == len(body)
        assert seen["body"] == body[:4096].decode()


def test_it_never_retries_a_streamed_post(client, upstream, upstream_b):
    answer(upstream, 503)
    make_route(
        service(
            upstream.url,
            upstream_b.url,
            balancing="round_robin",
            retries=1,
            retry_statuses="503",
            breaker_failures=0,
        ),
        "/s",
        retry_unsafe_methods=True,
        stream_uploads=True,  # else a small chunked body is buffered, and so retriable
    )
    publish()

    def chunks() -> Iterator[bytes]:
        yield b"a" * 1000
        yield b"b" * 1000

    posts = [client.post("/s", content=chunks()) for _ in range(4)]
    big = [client.post("/s", content=b"x" * (65 * 1024)) for _ in range(2)]

    assert Counter(p.status_code for p in posts + big) == {503: 3, 200: 3}
    assert len(received(upstream)) + len(received(upstream_b)) == 6
    assert [r["body_bytes"] for r in received(upstream) + received(upstream_b)].count(2000) == 4


def test_it_makes_one_attempt_plus_the_retries_at_most(client, upstream, upstream_b):
    answer(upstream, 503)
    answer(upstream_b, 503)
    fields = {"retry_statuses": "503", "breaker_failures": 0, "balancing": "round_robin"}
    make_route(service(upstream.url, upstream_b.url, retries=3, **fields), "/b3")
    make_route(service(upstream.url, upstream_b.url, retries=1, **fields), "/b1")
    publish()

    three = client.get("/b3")
    attempts_three = len(received(upstream)) + len(received(upstream_b))
    one = client.get("/b1")
    attempts_one = len(received(upstream)) + len(received(upstream_b)) - attempts_three

    assert three.status_code == 503  # the last upstream answer, passed on
    assert three.headers["x-upstream"] in {"up-a", "up-b"}
    assert attempts_three == 1 + 3
    assert one.status_code == 503
    assert attempts_one == 1 + 1


# The time budget


def test_it_answers_504_when_the_total_timeout_is_spent(client, upstream, upstream_b):
    make_route(
        service(upstream.url, upstream_b.url, total_timeout=1, retries=2, breaker_failures=0),
        "/slow",
        strip_prefix=True,
    )
    publish()

    started = time.monotonic()
    response = client.get("/slow/_slow?seconds=3")
    took = time.monotonic() - started

    assert response.status_code == 504
    assert error_code(response) == "upstream_timeout"
    assert took < 2.5  # the budget, not the upstream's 3 s
    assert len(received(upstream)) + len(received(upstream_b)) == 1  # no retry past the budget


def test_it_stops_retrying_when_the_budget_is_spent(client, upstream, upstream_b):
    answer(upstream, 503)
    answer(upstream_b, 503)
    make_route(
        service(
            upstream.url,
            upstream_b.url,
            total_timeout=1,
            retries=5,
            retry_statuses="503",
            breaker_failures=0,
        ),
        "/spent",
        strip_prefix=True,
    )
    publish()

    response = client.get("/spent/_slow?seconds=0.4")  # each attempt: 0.4 s, then 503

    assert response.status_code == 504
    assert error_code(response) == "upstream_timeout"
    assert len(received(upstream)) + len(received(upstream_b)) <= 3  # not 1 + 5


# The passive circuit breaker


def breaker_service(*urls: str, cooldown: float) -> Service:
    return service(
        *urls,
        balancing="round_robin",
        retries=0,
        breaker_failures=3,
        breaker_cooldown=cooldown,
    )


def test_it_stops_sending_to_a_target_after_breaker_failures(client, upstream, upstream_b):
    answer(upstream, 503)
    make_route(breaker_service(upstream.url, upstream_b.url, cooldown=60), "/cb")
    publish()

    answers = [client.get("/cb") for _ in range(12)]

    assert Counter(a.status_code for a in answers[:6]) == {503: 3, 200: 3}  # turns alternate
    assert [a.status_code for a in answers[6:]] == [200] * 6
    assert len(received(upstream)) == 3
    assert len(received(upstream_b)) == 9


def test_it_sends_one_trial_after_the_cooldown_and_closes_the_circuit(
    client, upstream, upstream_b, pool
):
    answer(upstream, 503)
    make_route(breaker_service(upstream.url, upstream_b.url, cooldown=1), "/cb", strip_prefix=True)
    publish()
    send_until(client, "/cb/open", lambda: len(received(upstream)) == 3)
    answer(upstream, None)  # healthy again, but out until its trial
    time.sleep(1)

    # A request that wants the half-open target asks for the trial; the monitor grants it on its
    # next round, to the next request: keep slow requests coming until one is the trial.
    slow: list[Future[httpx.Response]] = []
    deadline = time.monotonic() + 8
    while len(received(upstream)) == 3 and time.monotonic() < deadline:
        slow.append(pool.submit(client.get, "/cb/_slow?seconds=3"))
        time.sleep(0.1)
    assert len(received(upstream)) == 4
    burst = [pool.submit(client.get, "/cb/during") for _ in range(6)]
    during = [f.result() for f in burst]
    trial_pending = not any(
        f.done() and f.result().headers.get("x-upstream") == "up-a" for f in slow
    )

    assert trial_pending  # the trial holds its answer 3 s; the burst was meant to fit inside
    assert served_by(during) == {"up-b": 6}
    assert len(received(upstream)) == 4
    assert served_by([f.result() for f in slow])["up-a"] == 1
    after = [client.get("/cb/after") for _ in range(4)]
    assert served_by(after) == {"up-a": 2, "up-b": 2}


def test_a_failed_trial_opens_the_circuit_again(client, upstream, upstream_b):
    answer(upstream, 503)
    make_route(breaker_service(upstream.url, upstream_b.url, cooldown=2), "/cb")
    publish()
    send_until(client, "/cb", lambda: len(received(upstream)) == 3)
    time.sleep(2)

    send_until(client, "/cb", lambda: len(received(upstream)) == 4)  # the trial, answered 503
    after = [client.get("/cb") for _ in range(5)]

    assert served_by(after) == {"up-b": 5}
    assert len(received(upstream)) == 4


def test_it_brings_a_recovered_target_back_with_least_in_flight(client, upstream, upstream_b):
    answer(upstream, 503)
    make_route(
        service(
            upstream.url,
            upstream_b.url,
            balancing="least_in_flight",
            retries=0,
            breaker_failures=3,
            breaker_cooldown=1,
        ),
        "/lcb",
    )
    publish()
    send_until(client, "/lcb", lambda: len(received(upstream)) == 3)
    answer(upstream, None)
    time.sleep(1)

    # A trial goes out, though the other target is idle and always the least loaded.
    send_until(client, "/lcb", lambda: len(received(upstream)) == 4)
    after = served_by([client.get("/lcb") for _ in range(10)])

    assert after["up-a"] >= 3  # closed: back among the least loaded, sharing ties
    assert after["up-b"] >= 3


def test_turning_the_breaker_off_lets_an_open_circuit_go(client, upstream, upstream_b):
    answer(upstream, 503)
    svc = service(
        upstream.url,
        upstream_b.url,
        balancing="round_robin",
        retries=0,
        breaker_failures=1,
        breaker_cooldown=300,
    )
    make_route(svc, "/off")
    publish()
    for _ in range(4):
        client.get("/off")
    hits = len(received(upstream))
    assert [client.get("/off").headers["x-upstream"] for _ in range(4)] == ["up-b"] * 4
    assert len(received(upstream)) == hits  # its circuit is open for 5 minutes

    answer(upstream, None)
    svc.breaker_failures = 0
    svc.save()
    publish()

    deadline = time.monotonic() + 8
    while "up-a" not in {client.get("/off").headers["x-upstream"] for _ in range(4)}:
        assert time.monotonic() < deadline, "the open circuit outlived the breaker"
        time.sleep(0.1)


def test_a_spent_budget_is_not_counted_against_the_target(client, upstream):
    svc = service(upstream.url, total_timeout=0.3, breaker_failures=1, retries=0)
    make_route(svc, "/", match_type="prefix")
    publish()

    slow = [client.get("/_slow", params={"seconds": "1"}) for _ in range(2)]

    assert [error_code(r) for r in slow] == ["upstream_timeout"] * 2
    # With one failure enough to open it, a circuit would now refuse: the target is still in.
    assert client.get("/quick").status_code == 200


def test_a_client_that_leaves_mid_upload_is_not_blamed_on_the_target(client, gateway, upstream):
    # One failure would open this circuit: a client hanging up must not count as one.
    make_route(service(upstream.url, breaker_failures=1, breaker_cooldown=60), "/upload")
    publish()
    head = b"POST /upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 1000000\r\n\r\n"
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(head + b"x" * 200_000)  # streamed to the upstream: too large to hold
        time.sleep(0.3)
    time.sleep(0.3)

    assert client.get("/upload").status_code == 200

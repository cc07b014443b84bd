"""End to end: client -> real gateway (uvicorn) -> real upstream on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter

import httpx
import pytest

from routing.models import Target
from tests.conftest import make_route, make_service, publish, received

pytestmark = pytest.mark.django_db


def upstream_headers(seen: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in seen["headers"]:
        out.setdefault(name, []).append(value)
    return out


def test_it_forwards_and_returns_the_upstream_answer(client, upstream):
    make_route(make_service("users", upstream.url), "/users")
    publish()

    response = client.get("/users/42")

    assert response.status_code == 200
    assert response.json()["path"] == "/users/42"
    assert response.headers["x-upstream"] == "up-a"
    assert len(received(upstream)) == 1


def test_it_strips_the_prefix(client, upstream):
    make_route(make_service("users", upstream.url), "/api/users", strip_prefix=True)
    publish()

    assert client.get("/api/users/42").json()["path"] == "/42"
    assert client.get("/api/users").json()["path"] == "/"


def test_it_rewrites_the_prefix_under_the_targets_base_path(client, upstream):
    make_route(make_service("users", upstream.url + "/base"), "/api/users", rewrite="/v2/people")
    publish()

    assert client.get("/api/users/42/x").json()["path"] == "/base/v2/people/42/x"


def test_it_rewrites_with_regex_groups(client, upstream):
    make_route(
        make_service("users", upstream.url),
        r"/u/(?P<id>[0-9]+)/profile",
        match_type="regex",
        rewrite=r"/profiles/\g<id>",
    )
    publish()

    assert client.get("/u/17/profile").json()["path"] == "/profiles/17"
    assert client.get("/u/abc/profile").status_code == 404


def test_it_keeps_the_query_string_byte_for_byte(client, upstream):
    make_route(make_service("users", upstream.url), "/q")
    publish()
    query = "b=2&a=1&a=%2f&x=%7E&y=+&z&empty=&list=%5B1%5D&sp=a%20b"

    raw = _raw_request(client, f"GET /q?{query} HTTP/1.1\r\nHost: x\r\n\r\n")

    assert raw.startswith(b"HTTP/1.1 200")
    assert received(upstream)[-1]["query"] == query


def test_it_drops_hop_by_hop_and_connection_named_request_headers(client, upstream):
    make_route(make_service("users", upstream.url), "/h")
    publish()

    client.get(
        "/h",
        headers={
            "Connection": "keep-alive, X-Private-Hop",
            "X-Private-Hop": "secret",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "Upgrade": "websocket",
            "X-Kept": "yes",
        },
    )

    headers = upstream_headers(received(upstream)[-1])
    for name in ("x-private-hop", "keep-alive", "te", "proxy-authorization", "upgrade"):
        assert name not in headers
    assert headers["x-kept"] == ["yes"]


def test_it_drops_hop_by_hop_response_headers(client, upstream):
    make_route(make_service("users", upstream.url), "/", match_type="prefix")
    publish()

    response = client.get("/_hop")

    assert "x-secret-hop" not in response.headers
    assert "keep-alive" not in response.headers
    assert response.headers["x-kept"] == "1"


@pytest.fixture
def raw_upstream():
    """An upstream that writes its answer byte for byte, header case included (uvicorn would
    lower-case the names, as NGINX does not)."""
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close, X-Secret-Hop\r\n"
        b"X-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: 1\r\n\r\nok"
    )
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def test_it_drops_title_case_hop_by_hop_response_headers(client, raw_upstream):
    make_route(make_service("raw", raw_upstream), "/raw")
    publish()

    response = client.get("/raw")

    assert response.status_code == 200
    assert response.text == "ok"
    assert "x-secret-hop" not in response.headers
    assert "keep-alive" not in response.headers
    assert response.headers["x-kept"] == "1"


def test_it_never_forwards_client_written_identity_headers(client, upstream):
    make_route(make_service("users", upstream.url), "/who")
    publish()

    raw = _raw_request(
        client,
        "GET /who HTTP/1.1\r\nHost: x\r\nX-User-Id: 1\r\nx-user-role: admin\r\n"
        "X-USER-ROLES: admin\r\nX-User-Email: a@b.c\r\nX_User_Id: 1\r\nX-Other_Thing: 2\r\n\r\n",
    )

    assert raw.startswith(b"HTTP/1.1 200")
    names = set(upstream_headers(received(upstream)[-1]))
    assert not names & {
        "x-user-id",
        "x-user-role",
        "x-user-roles",
        "x-user-email",
        "x_user_id",
        "x-other_thing",
    }


def test_it_sets_x_forwarded_headers_replacing_an_untrusted_clients(client, upstream):
    make_route(make_service("users", upstream.url), "/fw")
    publish()

    client.get(
        "/fw",
        headers={
            "X-Forwarded-For": "203.0.113.9",
            "Host": "api.example.com",
            "X-Forwarded-Proto": "https",
        },
    )

    headers = upstream_headers(received(upstream)[-1])
    # Not a trusted proxy: its chain is replaced (tests/routing/proxy/test_header_hygiene.py).
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == ["api.example.com"]
    assert headers["host"] == [upstream.url.removeprefix("http://")]


def test_the_upstream_is_named_in_lower_case_whatever_the_target_url_says(client, upstream):
    """Host names are case-insensitive; the Host header the upstream gets is the canonical one,
    as it was when httpx wrote it, not the spelling of the admin's URL."""
    make_route(make_service("users", upstream.url.replace("127.0.0.1", "LocalHost")), "/lc")
    publish()

    answer = client.get("/lc")

    port = upstream.url.rsplit(":", 1)[1]
    assert answer.status_code == 200
    assert upstream_headers(received(upstream)[-1])["host"] == [f"localhost:{port}"]


def test_it_preserves_the_client_host_when_asked(client, upstream):
    make_route(make_service("users", upstream.url), "/ph", preserve_host=True)
    publish()

    client.get("/ph", headers={"Host": "api.example.com"})

    assert upstream_headers(received(upstream)[-1])["host"] == ["api.example.com"]


def test_it_generates_echoes_and_forwards_a_request_id(client, upstream):
    make_route(make_service("users", upstream.url), "/rid")
    publish()

    kept = client.get("/rid", headers={"X-Request-ID": "abc-123.DEF:9"})
    replaced = client.get("/rid", headers={"X-Request-ID": "bad id\twith <junk>" + "x" * 200})
    generated = client.get("/rid")

    assert kept.headers["x-request-id"] == "abc-123.DEF:9"
    assert upstream_headers(received(upstream)[0])["x-request-id"] == ["abc-123.DEF:9"]
    assert replaced.headers["x-request-id"] != "bad id"
    assert len(replaced.headers["x-request-id"]) == 32
    assert upstream_headers(received(upstream)[1])["x-request-id"] == [
        replaced.headers["x-request-id"]
    ]
    assert len(generated.headers["x-request-id"]) == 32


def test_it_forwards_request_bodies_of_every_method(client, upstream):
    make_route(make_service("users", upstream.url), "/m")
    publish()

    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        response = client.request(method, "/m", content=b"payload-" + method.encode())
        assert response.status_code == 200
        assert response.json()["method"] == method
        assert response.json()["body"] == "payload-" + method
    head = client.head("/m")
    assert head.status_code == 200
    assert head.content == b""
    assert received(upstream)[-1]["method"] == "HEAD"


def test_it_streams_a_large_chunked_request_body(client, upstream):
    make_route(make_service("users", upstream.url), "/upload")
    publish()
    size = 8 * 1024 * 1024

    def chunks():
        for _ in range(size // 65536):
            yield b"y" * 65536

    response = client.post("/upload", content=chunks())

    assert response.status_code == 200
    assert response.json()["body_bytes"] == size


def test_it_keeps_every_set_cookie_and_the_location_header(client, upstream):
    make_route(make_service("users", upstream.url), "/", match_type="prefix")
    publish()

    cookies = client.get("/_cookies")
    redirect = client.get("/_redirect")

    assert cookies.headers.get_list("set-cookie") == [
        "a=1; Path=/; HttpOnly",
        "b=2; Path=/api; SameSite=Lax",
    ]
    assert redirect.status_code == 302
    assert redirect.headers["location"] == "http://internal.example:8080/next?x=1"


def test_it_answers_502_when_the_upstream_refuses(client, dead_url):
    make_route(make_service("down", dead_url), "/down")
    publish()

    response = client.get("/down")

    assert response.status_code == 502
    body = response.json()["error"]
    assert body["code"] == "upstream_unavailable"
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text


def test_it_answers_503_when_no_target_is_enabled(client, upstream):
    service = make_service("empty", upstream.url)
    Target.objects.filter(service=service).update(enabled=False)
    make_route(service, "/empty")
    publish()

    response = client.get("/empty")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "upstream_unavailable"
    assert received(upstream) == []


def test_it_answers_504_when_the_upstream_is_too_slow(client, upstream):
    make_route(make_service("slow", upstream.url, read_timeout=0.3), "/", match_type="prefix")
    publish()

    started = time.monotonic()
    response = client.get("/_slow", params={"seconds": "3"})

    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 2.5


def test_it_retries_a_get_on_another_target_after_a_refused_connection(client, upstream, dead_url):
    make_route(make_service("half", dead_url, upstream.url, retries=1), "/half")
    publish()

    statuses = [client.get("/half").status_code for _ in range(6)]

    assert statuses == [200] * 6
    assert len(received(upstream)) == 6


def test_it_never_retries_a_post(client, upstream, dead_url):
    make_route(make_service("half", dead_url, upstream.url, retries=3), "/half")
    publish()

    statuses = Counter(client.post("/half", content=b"x").status_code for _ in range(6))

    # Round-robin sends half the POSTs to the dead target; those fail rather than being resent.
    assert statuses == Counter({200: 3, 502: 3})
    assert len(received(upstream)) == 3


def test_it_balances_by_weight(client, upstream, upstream_b):
    service = make_service("weighted")
    Target.objects.create(service=service, url=upstream.url, weight=300)
    Target.objects.create(service=service, url=upstream_b.url, weight=100)
    make_route(service, "/w")
    publish()

    servers = Counter(client.get("/w").headers["x-upstream"] for _ in range(80))

    assert servers == Counter({"up-a": 60, "up-b": 20})


def test_it_streams_a_100_mb_answer_without_holding_it_in_memory(client, upstream):
    make_route(make_service("big", upstream.url), "/", match_type="prefix")
    publish()
    total = 100 * 1024 * 1024
    baseline = _rss_bytes()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    received_bytes = 0
    with client.stream("GET", "/_stream", params={"bytes": str(total)}) as response:
        for chunk in response.iter_raw():
            received_bytes += len(chunk)
    done.set()
    sampler.join()

    assert received_bytes == total
    # Upstream, gateway and client share this process: buffering would add >= 100 MB.
    assert peak[0] - baseline < 40 * 1024 * 1024


@pytest.mark.parametrize(
    "framing",
    [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
    ],
)
def test_it_refuses_ambiguous_request_framing_and_forwards_nothing(client, upstream, framing):
    make_route(make_service("users", upstream.url), "/smuggle")
    publish()

    raw = _raw_request(
        client,
        f"POST /smuggle HTTP/1.1\r\nHost: x\r\n{framing}\r\n0\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
    )

    assert raw.startswith(b"HTTP/1.1 400")
    assert received(upstream) == []


def test_it_matches_the_normalised_path_and_forwards_that_same_path(client, upstream):
    make_route(make_service("users", upstream.url), "/users")
    publish()

    raw = _raw_request(client, "GET /other/..//users/./%7Eme/%61 HTTP/1.1\r\nHost: x\r\n\r\n")

    assert raw.startswith(b"HTTP/1.1 200")
    assert received(upstream)[-1]["path"] == "/users/~me/a"


def test_an_escaping_path_cannot_reach_a_route_its_raw_form_would_not(client, upstream, upstream_b):
    make_route(make_service("public", upstream.url), "/public")
    make_route(make_service("private", upstream_b.url), "/private")
    publish()

    encoded_slash = _raw_request(client, "GET /public/..%2Fprivate/x HTTP/1.1\r\nHost: x\r\n\r\n")
    dots = _raw_request(client, "GET /public/%2e%2e/private/x HTTP/1.1\r\nHost: x\r\n\r\n")

    assert encoded_slash.startswith(b"HTTP/1.1 400")
    assert b'"invalid_path"' in encoded_slash
    # The dot-segments resolve to /private/x: it is matched, and forwarded, as /private/x only.
    assert dots.startswith(b"HTTP/1.1 200")
    assert received(upstream) == []
    assert received(upstream_b)[-1]["path"] == "/private/x"


def test_reserved_paths_are_never_proxied(client, upstream):
    make_route(make_service("all", upstream.url), "/", match_type="prefix")
    publish()

    metrics = client.get("/metrics/anything")  # reserved below /metrics too
    escaped = _raw_request(client, "GET /x/../admin/login/ HTTP/1.1\r\nHost: x\r\n\r\n")

    assert metrics.status_code == 404
    assert metrics.json()["error"]["code"] == "not_found"
    assert escaped.startswith(b"HTTP/1.1 404")
    assert received(upstream) == []


def test_a_get_route_answers_head_too(client, upstream):
    make_route(make_service("users", upstream.url), "/users", methods="GET")
    publish()

    response = client.head("/users/1")

    assert response.status_code == 200
    assert response.content == b""
    assert received(upstream)[-1]["method"] == "HEAD"


def test_it_answers_404_and_405_with_the_standard_body(client, upstream):
    make_route(make_service("users", upstream.url), "/users", methods="GET, POST")
    publish()

    missing = client.get("/nothing-here")
    wrong_method = client.delete("/users/1")

    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "route_not_found"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert wrong_method.headers["allow"] == "GET, HEAD, POST"


def _raw_request(client: httpx.Client, request: str) -> bytes:
    """Send bytes exactly as written (no client normalisation) and read the whole answer."""
    url = httpx.URL(str(client.base_url))
    request = request.replace("\r\n", "\r\nConnection: close\r\n", 1)
    with socket.create_connection((url.host, url.port), timeout=5) as sock:
        sock.sendall(request.encode("latin-1"))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")

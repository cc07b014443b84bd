"""WebSocket routes through the gateway, against a real WebSocket upstream on 127.0.0.1: the
upgrade meets identity, policy and limits (401 before anything reaches the upstream), a token
may come as a header, a subprotocol or a query parameter and never reaches the upstream, frames
are relayed both ways, close codes pass through, the idle timeout and the connection cap hold,
and a gateway stopping (SIGTERM) closes its connections with 1001."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from audit.models import AuditEntry
from routing.proxy.websocket import IDLE_CODE, IDLE_REASON
from tests.conftest import make_route, make_service, publish
from tests.routing.observe.test_access_log import capture_access_log
from tests.routing.observe.test_metrics import scrape, settled, value
from tests.routing.proxy.test_identity import policy, token
from tests.routing.proxy.test_limits import tier
from tests.servers import ServerThread, uvicorn_gateway

pytestmark = pytest.mark.django_db(transaction=True)


class EchoSocket:
    """A WebSocket upstream: accepts with the first subprotocol offered, answers `echo:<text>`
    (bytes come back as they are), closes with 4001 "bye" when told `close`, and records each
    handshake and the code each client closed with."""

    def __init__(self) -> None:
        self.handshakes: list[dict[str, Any]] = []
        self.client_closed: list[int] = []
        self.received_texts: list[str] = []
        self.accept_delay = 0.0  # seconds before answering the handshake
        self.refuse = False  # answer the handshake with 403 instead of accepting

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.handshakes.append(
            {
                "path": scope["path"],
                "query": scope["query_string"].decode(),
                "headers": headers,
                "subprotocols": list(scope["subprotocols"]),
            }
        )
        offered = scope["subprotocols"]
        await asyncio.sleep(self.accept_delay)
        if self.refuse:
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.client_closed.append(message.get("code"))
                return
            text = message.get("text")
            if text is not None:
                self.received_texts.append(text)
            if text == "close":
                await send({"type": "websocket.close", "code": 4001, "reason": "bye"})
                return
            if text is not None:
                await send({"type": "websocket.send", "text": f"echo:{text}"})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})


@pytest.fixture(scope="module")
def _echo_server() -> Iterator[ServerThread]:
    server = ServerThread(EchoSocket()).start()
    yield server
    server.stop()


@pytest.fixture
def echo(_echo_server: ServerThread) -> EchoSocket:
    app = _echo_server.server.config.app
    app.__init__()
    app.url = _echo_server.url
    return app


def ws_url(gateway: ServerThread, path: str) -> str:
    return gateway.url.replace("http://", "ws://") + path


def socket_route(echo: EchoSocket, path: str = "/live", **fields: Any) -> None:
    fields.setdefault("websocket", True)
    make_route(make_service("live", echo.url), path, name="live", **fields)
    publish()


def refused(gateway: ServerThread, path: str, **options: Any) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as caught:
        connect(ws_url(gateway, path), open_timeout=5, **options)
    return caught.value


def test_an_upgrade_without_a_token_is_401_and_reaches_nothing(gateway, echo):
    socket_route(echo, role_policy=policy("authenticated"))

    refusal = refused(gateway, "/live")

    assert refusal.response.status_code == 401
    assert b'"code": "missing_credentials"' in refusal.response.body.replace(b'":"', b'": "')
    assert echo.handshakes == []


@pytest.mark.parametrize("form", ["header", "subprotocol", "query"])
def test_a_token_in_any_form_opens_a_relay_and_never_reaches_the_upstream(gateway, echo, form):
    socket_route(echo, role_policy=policy("any_of", "doctor"))
    jwt = token(roles=["doctor"])
    options: dict[str, Any] = {"additional_headers": {"X-User-Id": "spoofed"}}
    path = "/live/room?lang=en"
    if form == "header":
        options["additional_headers"]["Authorization"] = f"Bearer {jwt}"
    elif form == "subprotocol":
        options["subprotocols"] = ["bearer", jwt, "chat.v1"]
    else:
        path += f"&access_token={jwt}"

    with connect(ws_url(gateway, path), open_timeout=5, **options) as socket:
        socket.send("hello")
        assert socket.recv(timeout=5) == "echo:hello"
        socket.send(b"\x00\x01binary")
        assert socket.recv(timeout=5) == b"\x00\x01binary"
        if form == "subprotocol":
            assert socket.subprotocol == "chat.v1"

    handshake = echo.handshakes[0]
    assert handshake["path"] == "/live/room"
    assert handshake["query"] == "lang=en"
    assert handshake["headers"]["x-user-id"] == "7"  # the gateway's, not the client's
    assert handshake["headers"]["x-user-role"] == "doctor"
    if form != "header":  # a header is forwarded as on any route (forward_authorization)
        assert jwt not in str(handshake)
    assert handshake["subprotocols"] == (["chat.v1"] if form == "subprotocol" else [])


def test_the_wrong_role_is_403_and_a_plain_route_refuses_the_upgrade(gateway, echo):
    socket_route(echo, role_policy=policy("any_of", "doctor"))
    make_route(make_service("plain", echo.url), "/plain", name="plain")
    publish()

    wrong_role = refused(gateway, "/live", subprotocols=["bearer", token(roles=["nurse"])])
    not_a_socket = refused(gateway, "/plain")

    assert wrong_role.response.status_code == 403
    assert not_a_socket.response.status_code == 400
    assert b"websocket_not_allowed" in not_a_socket.response.body
    assert echo.handshakes == []


def test_close_codes_pass_through_both_ways(gateway, echo):
    socket_route(echo)

    with connect(ws_url(gateway, "/live"), open_timeout=5) as socket:
        socket.send("close")
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=5)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "bye")

    with connect(ws_url(gateway, "/live"), open_timeout=5) as socket:
        socket.send("ping")
        socket.recv(timeout=5)
        socket.close(code=4002, reason="leaving")
    deadline = time.monotonic() + 5
    while 4002 not in echo.client_closed:
        assert time.monotonic() < deadline, echo.client_closed
        time.sleep(0.05)


def test_a_silent_connection_is_closed_after_the_idle_timeout(gateway, echo):
    socket_route(echo, websocket_idle_timeout=0.5)

    with connect(ws_url(gateway, "/live"), open_timeout=5) as socket:
        socket.send("one")
        assert socket.recv(timeout=5) == "echo:one"
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=5)

    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (IDLE_CODE, IDLE_REASON)


def test_the_routes_connection_cap_refuses_one_more(gateway, echo):
    socket_route(echo, websocket_max_connections=1)

    with connect(ws_url(gateway, "/live"), open_timeout=5) as first:
        first.send("a")
        assert first.recv(timeout=5) == "echo:a"
        over = refused(gateway, "/live")
    assert over.response.status_code == 503
    assert b"too_many_connections" in over.response.body

    # The slot is freed once the gateway has seen the first connection close.
    deadline = time.monotonic() + 5
    while True:
        try:
            again = connect(ws_url(gateway, "/live"), open_timeout=5)
            break
        except InvalidStatus as exc:
            assert exc.response.status_code == 503 and time.monotonic() < deadline
            time.sleep(0.05)
    with again:
        again.send("b")
        assert again.recv(timeout=5) == "echo:b"


def test_rate_limits_count_upgrades(gateway, echo):
    socket_route(echo, rate_limit_tier=tier("2/m"))

    for _ in range(2):
        with connect(ws_url(gateway, "/live"), open_timeout=5):
            pass
    limited = refused(gateway, "/live")

    assert limited.response.status_code == 429
    assert len(echo.handshakes) == 2


def test_metrics_count_open_connections_and_messages(gateway, echo, client):
    socket_route(echo)
    messages = "portier_websocket_messages_total"
    connections = "portier_websocket_connections"
    before = scrape(client)

    with connect(ws_url(gateway, "/live"), open_timeout=5) as socket:
        for text in ("a", "b", "c"):
            socket.send(text)
            socket.recv(timeout=5)
        during = scrape(client)
    after = settled(lambda: scrape(client), lambda s: value(s, connections, route="live") == 0)

    def moved(direction: str) -> float:
        return value(after, messages, route="live", direction=direction) - value(
            before, messages, route="live", direction=direction
        )

    assert value(during, connections, route="live") == 1
    assert moved("in") == 3 and moved("out") == 3
    assert value(after, connections, route="live") == 0


def test_sigterm_closes_open_connections_with_1001(echo):
    socket_route(echo)

    with uvicorn_gateway(PORTIER_GRACEFUL_TIMEOUT="10") as gateway:
        deadline = time.monotonic() + 10
        while httpx.get(gateway.url + "/live").status_code == 404:  # the config has come
            assert time.monotonic() < deadline
            time.sleep(0.1)
        url = gateway.url.replace("http://", "ws://") + "/live"
        with connect(url, open_timeout=5) as socket:
            socket.send("hello")
            assert socket.recv(timeout=5) == "echo:hello"

            gateway.process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                socket.recv(timeout=10)
        assert gateway.process.wait(timeout=20) == 0

    assert closed.value.rcvd.code == 1001
    deadline = time.monotonic() + 5
    while 1001 not in echo.client_closed:
        assert time.monotonic() < deadline, echo.client_closed
        time.sleep(0.05)


def test_a_connection_is_logged_and_audited_without_its_token(gateway, echo):
    socket_route(echo, role_policy=policy("any_of", "doctor"), audit=True)
    jwt = token(roles=["doctor"])

    url = ws_url(gateway, f"/live?access_token={jwt}&x=1")
    with capture_access_log() as access_log, connect(url, open_timeout=5) as socket:
        socket.send("hello")
        socket.recv(timeout=5)
        socket.close()
        (line,) = access_log.wait(1)
    assert line["status"] == 101 and line["route"] == "live"
    assert line["path"] == "/live?x=1"
    assert line["user_id"] == "7" and line["bytes_in"] == 5
    deadline = time.monotonic() + 5
    while not AuditEntry.objects.filter(route="live", status=101).exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    entry = AuditEntry.objects.get(route="live")
    assert jwt not in f"{entry.path} {entry.query}"


def test_a_message_over_the_size_limit_closes_with_1009(gateway, echo, settings):
    settings.PORTIER_WEBSOCKET_MAX_MESSAGE_BYTES = 1000
    socket_route(echo)

    with connect(ws_url(gateway, "/live"), open_timeout=5, max_size=None) as socket:
        socket.send("x" * 900)
        assert socket.recv(timeout=5) == "echo:" + "x" * 900
        socket.send("x" * 2000)
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=5)

    assert closed.value.rcvd.code == 1009
    assert all(len(text) < 1000 for text in echo.received_texts)


def test_a_browser_offering_only_the_token_gets_bearer_back(gateway, echo):
    socket_route(echo, role_policy=policy("authenticated"))

    url = ws_url(gateway, "/live")
    with connect(url, open_timeout=5, subprotocols=["bearer", token(roles=[])]) as socket:
        socket.send("hi")
        assert socket.recv(timeout=5) == "echo:hi"
        # Browsers fail a handshake that picks no subprotocol after they offered some.
        assert socket.subprotocol == "bearer"

    assert echo.handshakes[0]["subprotocols"] == []


def test_concurrent_upgrades_never_pass_the_cap(gateway, echo):
    echo.accept_delay = 0.5  # every handshake is still in flight when the others arrive
    socket_route(echo, websocket_max_connections=1)
    outcomes: list[Any] = []

    def attempt() -> None:
        try:
            with connect(ws_url(gateway, "/live"), open_timeout=5) as socket:
                socket.send("x")
                outcomes.append(socket.recv(timeout=5))
        except InvalidStatus as exc:
            outcomes.append(exc.response.status_code)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)

    assert sorted(outcomes, key=str) == [503, 503, 503, "echo:x"]


def test_the_servers_handshake_log_line_never_holds_the_token(gateway, echo):
    socket_route(echo, role_policy=policy("authenticated"))
    jwt = token(roles=[])
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    server_log = logging.getLogger("uvicorn.error")
    handler, level = Collect(), server_log.level
    server_log.addHandler(handler)
    server_log.setLevel(logging.INFO)  # as production runs it
    try:
        with connect(ws_url(gateway, f"/live?access_token={jwt}&room=7"), open_timeout=5):
            pass
        with pytest.raises(InvalidStatus):
            connect(ws_url(gateway, "/live?access_token=not-a-jwt"), open_timeout=5)
    finally:
        server_log.removeHandler(handler)
        server_log.setLevel(level)

    # The gateway's two lines (the echo upstream, in this process too, logs its own).
    handshakes = [line for line in lines if '"WebSocket /live?access_token=' in line]
    assert len(handshakes) == 2, lines
    assert all("access_token=[REDACTED]" in line for line in handshakes)
    assert "access_token=[REDACTED]&room=7" in handshakes[0]
    assert not any(jwt in line or "not-a-jwt" in line for line in lines)


def test_a_client_leaving_mid_handshake_is_still_recorded(gateway, echo, client):
    echo.accept_delay, echo.refuse = 1.0, True
    socket_route(echo)
    in_flight = "portier_requests_in_flight"
    before = value(scrape(client), in_flight)

    with pytest.raises(TimeoutError):
        connect(ws_url(gateway, "/live"), open_timeout=0.3)

    after = settled(
        lambda: scrape(client),
        lambda s: echo.handshakes and value(s, in_flight) == before,
    )
    assert value(after, in_flight) == before  # not left counted as in flight forever

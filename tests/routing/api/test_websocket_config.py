"""WebSocket routes in the three views of the configuration: the admin's form, the management API
and the declarative document each turn a route into a WebSocket route that the running gateway
relays, refuse the same bad values with the same words, and a document round-trips."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from websockets.sync.client import connect

from routing.api.document import (
    DocumentInvalid,
    document_apply,
    document_dump,
    document_export,
    document_load,
)
from routing.models import Route
from tests.conftest import make_route, make_service, publish
from tests.routing.api import test_management_api as management
from tests.routing.api.test_management_api import error_code, eventually
from tests.routing.proxy.test_websocket import EchoSocket
from tests.routing.test_admin import route_form_of
from tests.servers import ServerThread

pytestmark = management.pytestmark
admin = management.admin  # fixture: a superuser's bearer headers

DOCUMENT = """\
version: 1
services:
  - name: live
    targets:
      - url: {url}
policies: []
tiers: []
routes:
  - name: live
    service: live
    path: /live
    websocket: true
    websocket_idle_timeout: 30
    websocket_max_connections: 100
"""


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoSocket]:
    server = ServerThread(EchoSocket()).start()
    server.server.config.app.url = server.url
    yield server.server.config.app
    server.stop()


def relays(gateway, path: str = "/live") -> bool:
    """The running gateway accepts an upgrade on `path` and relays a message both ways."""
    try:
        url = gateway.url.replace("http://", "ws://") + path
        with connect(url, open_timeout=5) as socket:
            socket.send("hi")
            return socket.recv(timeout=5) == "echo:hi"
    except Exception:
        return False


def test_the_admin_form_turns_a_route_into_a_websocket_route(admin_client, gateway, echo):
    route = make_route(make_service("live", echo.url), "/live", name="live")
    publish()
    assert not relays(gateway)

    data = route_form_of(
        route, websocket="on", websocket_idle_timeout="30", websocket_max_connections="5"
    )
    response = admin_client.post(f"/admin/routing/route/{route.pk}/change/", data)

    assert response.status_code == 302, response.content.decode()[:2000]
    assert eventually(lambda: relays(gateway))
    assert Route.objects.get(pk=route.pk).websocket_max_connections == 5


def test_the_api_sets_it_and_refuses_a_bad_idle_timeout(client, admin, gateway, echo):
    make_route(make_service("live", echo.url), "/live", name="live")

    bad = client.patch("/admin/api/routes/live", json={"websocket_idle_timeout": 0}, headers=admin)
    good = client.patch(
        "/admin/api/routes/live",
        json={"websocket": True, "websocket_idle_timeout": 30},
        headers=admin,
    )

    assert bad.status_code == 400 and error_code(bad) == "invalid_request"
    assert "websocket_idle_timeout" in bad.json()["error"]["fields"]
    assert good.status_code == 200, good.text
    assert good.json()["websocket"] is True
    assert eventually(lambda: relays(gateway))


def test_the_document_sets_it_round_trips_and_refuses_a_bad_value(gateway, echo):
    text = DOCUMENT.format(url=echo.url)

    document_apply(document_load(text))

    assert eventually(lambda: relays(gateway))
    assert document_dump(document_export()).endswith(text)  # after its header comment
    bad = text.replace("websocket_idle_timeout: 30", "websocket_idle_timeout: 0")
    with pytest.raises(DocumentInvalid) as refused:
        document_apply(document_load(bad))
    assert "websocket_idle_timeout" in " ".join(refused.value.errors)

"""A registered instance at a static target's address: every view tells the same story.

The pool holds an address once, as the static target, so it is never balanced twice. A
registration there would be listed by /registry/ but shown nowhere else (not /health/services,
not the admin): the registry refuses it (409 instance_is_static_target), and an instance whose
address becomes a static target later (saved in the admin) leaves the listing, is reported as
the static target only, and is told so on its next heartbeat.

Everything is real (gateway, Redis, upstreams), as in test_registry.py, whose helpers these use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from django.conf import settings
from django.core.cache import cache

from accounts.services import api_key_issue
from routing.management.echo_upstream import EchoUpstream
from routing.models import Target
from tests.conftest import make_route, make_service, publish
from tests.routing.upstream.test_registry import (
    error_code,
    eventually,
    heartbeat,
    listed,
    register,
    reported_targets,
    role_holder,
    upstreams_of,
)
from tests.servers import ServerThread

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _empty_registry() -> None:
    """Registered instances and health state live in Redis, which no test transaction rolls back."""
    cache.delete_pattern("registry:*")
    cache.delete_pattern("health:*")


@pytest.fixture
def registrar_key() -> str:
    deployer = role_holder("deployer", settings.PORTIER_REGISTRAR_ROLE)
    return api_key_issue(owner=deployer, name="ci")[1]


@pytest.fixture
def instance_server() -> Iterator[Callable[[str], ServerThread]]:
    started: list[ServerThread] = []

    def start(name: str) -> ServerThread:
        server = ServerThread(EchoUpstream(name)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def sources(client: httpx.Client, service: str) -> list[tuple[str, str]]:
    """(url, source) of each target /health/services reports for the service."""
    return [(t["url"], t["source"]) for t in reported_targets(client, service)]


# A service name each: the gateway's board keeps instances it saw for their TTL.
@pytest.mark.parametrize(
    ("name", "suffix"), [("pinned", ""), ("pinned-slash", "/")], ids=["same-url", "trailing-slash"]
)
def test_it_refuses_to_register_a_static_targets_address(
    client, upstream, registrar_key, instance_server, name, suffix
):
    make_route(make_service(name, upstream.url, allow_registration=True), f"/{name}")
    publish()

    refused = register(client, registrar_key, name, "dup-1", url=upstream.url + suffix)

    assert refused.status_code == 409
    assert error_code(refused) == "instance_is_static_target"
    assert "static target" in refused.json()["error"]["message"]
    assert listed(client, registrar_key, name) == []
    assert sources(client, name) == [(upstream.url, "static")]
    # Another address is registered as usual, and the views agree on both.
    other = instance_server("inst-1")
    assert register(client, registrar_key, name, "p-2", url=other.url).status_code == 201
    assert [i["url"] for i in listed(client, registrar_key, name)] == [other.url]
    assert eventually(
        lambda: sources(client, name) == [(upstream.url, "static"), (other.url, "registered")]
    )


def test_an_instance_whose_address_becomes_a_static_target_is_shown_as_that_target(
    client, upstream, registrar_key, instance_server
):
    service = make_service("promoted", upstream.url, allow_registration=True)
    make_route(service, "/promoted")
    publish()
    instance = instance_server("inst-1")
    assert register(client, registrar_key, "promoted", "pr-1", url=instance.url).status_code == 201
    assert eventually(lambda: (instance.url, "registered") in sources(client, "promoted"))

    # An admin makes the instance's address a static target of the service.
    Target.objects.create(service=service, url=instance.url)
    publish()

    assert listed(client, registrar_key, "promoted") == []
    assert eventually(
        lambda: (
            sorted(sources(client, "promoted"))
            == sorted([(upstream.url, "static"), (instance.url, "static")])
        )
    )
    renewal = heartbeat(client, registrar_key, "promoted", "pr-1")
    assert renewal.status_code == 409
    assert error_code(renewal) == "instance_is_static_target"
    # Still served, once, as the static target: the two addresses share the traffic evenly (in
    # the pool twice, the instance would take two requests in three).
    seen = upstreams_of(client, "/promoted", 20)
    assert set(seen) == {"up-a", "inst-1"}
    assert abs(seen["up-a"] - seen["inst-1"]) <= 2

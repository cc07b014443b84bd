"""The service registry end to end: instances register over /registry/ on the running gateway,
receive proxied traffic beside the static targets, heartbeat, expire, leave, and are health-checked.

Everything is real (gateway, Redis, upstreams); every wait polls towards a deadline and nothing
asserts how fast it went: the machine running the tests may be busy.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.db.utils import OperationalError

from accounts import services as api_key_services
from accounts.models import ApiKey, User
from accounts.services import api_key_issue
from routing.management.echo_upstream import EchoUpstream
from tests.conftest import make_route, make_service, publish, received
from tests.servers import ServerThread

# The gateway's threads look API keys and users up in the database: test data must be committed.
pytestmark = pytest.mark.django_db(transaction=True)

DEADLINE = 10.0  # seconds any eventual outcome may take on a busy machine


@pytest.fixture(autouse=True)
def _empty_registry() -> None:
    """Registered instances and health state live in Redis, which no test transaction rolls back."""
    cache.delete_pattern("registry:*")
    cache.delete_pattern("health:*")


@pytest.fixture
def instance_server() -> Iterator[Callable[[str], ServerThread]]:
    """Starts echo upstreams that play registered instances; each answers with its own name."""
    started: list[ServerThread] = []

    def start(name: str) -> ServerThread:
        server = ServerThread(EchoUpstream(name)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def role_holder(username: str, *roles: str) -> User:
    user = User.objects.create_user(username, email=f"{username}@example.com", password="pw-9x")
    for role in roles:
        # Transactional tests flush the database: the migration's registrar group may be gone.
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


@pytest.fixture
def registrar_key() -> str:
    deployer = role_holder("deployer", settings.PORTIER_REGISTRAR_ROLE)
    return api_key_issue(owner=deployer, name="ci")[1]


def instances_url(service: str, instance_id: str = "") -> str:
    return f"/registry/services/{service}/instances" + (f"/{instance_id}" if instance_id else "")


def register(
    client: httpx.Client, key: str, service: str, instance_id: str, **body: Any
) -> httpx.Response:
    return client.put(instances_url(service, instance_id), json=body, headers={"X-API-Key": key})


def heartbeat(client: httpx.Client, key: str, service: str, instance_id: str) -> httpx.Response:
    return client.post(
        instances_url(service, instance_id) + "/heartbeat", headers={"X-API-Key": key}
    )


def listed(client: httpx.Client, key: str, service: str) -> list[dict[str, Any]]:
    response = client.get(instances_url(service), headers={"X-API-Key": key})
    assert response.status_code == 200
    return response.json()["instances"]


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


def eventually(check: Callable[[], bool], seconds: float = DEADLINE) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def served_by(client: httpx.Client, path: str) -> str | None:
    response = client.get(path)
    return response.headers.get("x-upstream") if response.status_code == 200 else None


def upstreams_of(client: httpx.Client, path: str, count: int) -> Counter[str | None]:
    return Counter(served_by(client, path) for _ in range(count))


def reported_targets(client: httpx.Client, service: str) -> list[dict[str, Any]]:
    """The service's targets in /health/services (127.0.0.1 is an operator network)."""
    services = client.get("/health/services").json()["services"]
    return next(s["targets"] for s in services if s["name"] == service)


def registered_only(client: httpx.Client, service: str) -> list[dict[str, Any]]:
    return [t for t in reported_targets(client, service) if t["source"] == "registered"]


def test_a_registered_instance_receives_its_services_traffic(
    client, registrar_key, instance_server
):
    make_route(make_service("catalog", allow_registration=True), "/catalog")
    publish()
    instance = instance_server("inst-1")
    metadata = {"zone": "eu-west-1a", "version": "2.3.1"}

    first = register(client, registrar_key, "catalog", "cat-1", url=instance.url, metadata=metadata)

    assert first.status_code == 201
    assert first.json()["instance"]["id"] == "cat-1"
    assert first.json()["expires_in"] == 30
    assert eventually(lambda: served_by(client, "/catalog/items/7") == "inst-1")
    assert received(instance)[-1]["path"] == "/catalog/items/7"

    again = register(
        client, registrar_key, "catalog", "cat-1", url=instance.url, weight=50, metadata=metadata
    )

    assert again.status_code == 200
    assert again.json()["instance"]["registered_at"] == first.json()["instance"]["registered_at"]
    [entry] = listed(client, registrar_key, "catalog")
    assert entry | {"registered_at": 0, "heartbeat_at": 0} == {
        "id": "cat-1",
        "service": "catalog",
        "url": instance.url,
        "weight": 50,
        "ttl": 30,
        "metadata": metadata,
        "registered_at": 0,
        "heartbeat_at": 0,
        "owner": f"api_key:{User.objects.get(username='deployer').pk}",
    }
    assert eventually(lambda: registered_only(client, "catalog") != [])
    [reported] = registered_only(client, "catalog")
    assert reported["instance_id"] == "cat-1"
    assert reported["url"] == instance.url
    assert reported["metadata"] == metadata


def test_it_registers_under_a_new_id_on_post(client, registrar_key, instance_server):
    make_route(make_service("posted", allow_registration=True), "/posted")
    publish()
    instance = instance_server("inst-1")

    response = client.post(
        instances_url("posted"), json={"url": instance.url}, headers={"X-API-Key": registrar_key}
    )

    assert response.status_code == 201
    new_id = response.json()["instance"]["id"]
    assert [i["id"] for i in listed(client, registrar_key, "posted")] == [new_id]
    assert eventually(lambda: served_by(client, "/posted") == "inst-1")


def test_static_targets_and_registered_instances_are_balanced_together(
    client, upstream, registrar_key, instance_server
):
    make_route(make_service("mixed", upstream.url, allow_registration=True), "/mixed")
    publish()
    instance = instance_server("inst-1")
    assert register(client, registrar_key, "mixed", "m-1", url=instance.url).status_code == 201
    assert eventually(lambda: served_by(client, "/mixed") == "inst-1")

    seen = upstreams_of(client, "/mixed", 20)

    # Equal weights, weighted round-robin: both share the traffic.
    assert set(seen) == {"up-a", "inst-1"}
    assert seen["up-a"] >= 5 and seen["inst-1"] >= 5


def test_heartbeats_keep_an_instance_past_its_ttl(client, upstream, registrar_key, instance_server):
    make_route(make_service("beating", upstream.url, allow_registration=True), "/beating")
    publish()
    instance = instance_server("inst-1")
    registered = register(client, registrar_key, "beating", "b-1", url=instance.url, ttl=2)
    assert registered.status_code == 201
    assert eventually(lambda: served_by(client, "/beating") == "inst-1")

    started = time.monotonic()
    for beat in range(1, 5):  # about one a second, on schedule: ~3.6 s, past the 2 s TTL
        time.sleep(max(0.0, started + beat * 0.9 - time.monotonic()))
        response = heartbeat(client, registrar_key, "beating", "b-1")
        assert response.status_code == 200, f"heartbeat {beat} found the instance expired"
        assert response.json()["expires_in"] == 2

    assert time.monotonic() - started > 2
    assert [i["id"] for i in listed(client, registrar_key, "beating")] == ["b-1"]
    received(instance).clear()
    assert "inst-1" in upstreams_of(client, "/beating", 6)


def test_an_instance_without_heartbeats_expires(client, upstream, registrar_key, instance_server):
    make_route(make_service("fading", upstream.url, allow_registration=True), "/fading")
    publish()
    instance = instance_server("inst-1")
    registered = register(client, registrar_key, "fading", "f-1", url=instance.url, ttl=2)
    assert registered.status_code == 201
    assert eventually(lambda: served_by(client, "/fading") == "inst-1")

    assert eventually(lambda: listed(client, registrar_key, "fading") == [])

    response = heartbeat(client, registrar_key, "fading", "f-1")
    assert response.status_code == 404
    assert error_code(response) == "not_registered"
    assert eventually(lambda: set(upstreams_of(client, "/fading", 6)) == {"up-a"})
    received(instance).clear()
    assert set(upstreams_of(client, "/fading", 10)) == {"up-a"}
    assert received(instance) == []


def test_deregistering_removes_an_instance_at_once(
    client, upstream, registrar_key, instance_server
):
    make_route(make_service("leaving", upstream.url, allow_registration=True), "/leaving")
    publish()
    instance = instance_server("inst-1")
    assert register(client, registrar_key, "leaving", "l-1", url=instance.url).status_code == 201
    assert eventually(lambda: served_by(client, "/leaving") == "inst-1")
    headers = {"X-API-Key": registrar_key}

    response = client.delete(instances_url("leaving", "l-1"), headers=headers)

    assert response.status_code == 204
    assert listed(client, registrar_key, "leaving") == []
    again = client.delete(instances_url("leaving", "l-1"), headers=headers)
    assert again.status_code == 404
    assert error_code(again) == "not_registered"
    assert error_code(heartbeat(client, registrar_key, "leaving", "l-1")) == "not_registered"
    assert eventually(lambda: set(upstreams_of(client, "/leaving", 6)) == {"up-a"})
    received(instance).clear()
    assert set(upstreams_of(client, "/leaving", 10)) == {"up-a"}
    assert received(instance) == []


@pytest.fixture
def open_service() -> str:
    make_service("open", allow_registration=True)
    publish()
    return "open"


def test_it_refuses_a_caller_without_credentials(client, open_service):
    response = client.put(instances_url("open", "x-1"), json={"url": "http://127.0.0.1:9"})

    assert response.status_code == 401
    assert error_code(response) == "missing_credentials"
    assert "request_id" in response.json()["error"]
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_it_refuses_a_wrong_key(client, open_service, registrar_key):
    wrong = registrar_key[:-4] + "AAAA"

    response = client.get(instances_url("open"), headers={"X-API-Key": wrong})

    assert response.status_code == 401
    assert error_code(response) == "invalid_api_key"


def test_it_refuses_a_valid_key_without_the_registrar_role(client, open_service, registrar_key):
    _, key = api_key_issue(owner=role_holder("reader", "billing"), name="ro")

    response = register(client, key, "open", "x-1", url="http://127.0.0.1:9")

    assert response.status_code == 403
    assert error_code(response) == "forbidden"
    assert listed(client, registrar_key, "open") == []


@pytest.mark.parametrize("role", [settings.PORTIER_REGISTRAR_ROLE, settings.PORTIER_ADMIN_ROLE])
def test_a_jwt_with_the_registrar_or_admin_role_registers(
    client, open_service, registrar_key, role
):
    role_holder("ops", role)
    login = client.post("/auth/token", json={"username": "ops", "password": "pw-9x"})
    assert login.status_code == 200
    bearer = {"Authorization": f"Bearer {login.json()['access']}"}

    response = client.put(
        instances_url("open", "jwt-1"), json={"url": "http://127.0.0.1:9"}, headers=bearer
    )

    assert response.status_code == 201
    assert [i["id"] for i in listed(client, registrar_key, "open")] == ["jwt-1"]


def test_it_answers_404_for_an_unknown_service(client, registrar_key):
    response = register(client, registrar_key, "nowhere", "x-1", url="http://127.0.0.1:9")

    assert response.status_code == 404
    assert error_code(response) == "unknown_service"


def test_it_refuses_a_service_that_does_not_allow_registration(client, registrar_key):
    make_service("closed", "http://127.0.0.1:9")
    publish()

    response = register(client, registrar_key, "closed", "x-1", url="http://127.0.0.1:9")

    assert response.status_code == 403
    assert error_code(response) == "registration_disabled"
    assert cache.get("registry:closed") is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://127.0.0.1:21"}, "url"),
        ({"url": "http://user:secret@127.0.0.1:8080"}, "url"),
        ({"url": "http://127.0.0.1:8080/?debug=1"}, "url"),
        ({"url": "http://127.0.0.1:8080", "ttl": 0}, "ttl"),
        ({"url": "http://127.0.0.1:8080", "weight": 5000}, "weight"),
        ({"url": "http://127.0.0.1:8080", "metadata": {"notes": "x" * 3000}}, "metadata"),
        ({"url": "http://127.0.0.1:8080", "metadata": ["not", "an", "object"]}, "metadata"),
        (["http://127.0.0.1:8080"], "non_field_errors"),
    ],
    ids=[
        "ftp",
        "credentials",
        "query",
        "ttl-0",
        "weight-5000",
        "big-metadata",
        "list-metadata",
        "list-body",
    ],
)
def test_it_refuses_an_invalid_instance_and_registers_nothing(
    client, open_service, registrar_key, body, field
):
    response = client.put(
        instances_url("open", "bad-1"), json=body, headers={"X-API-Key": registrar_key}
    )

    assert response.status_code == 400
    assert error_code(response) == "invalid_request"
    assert field in response.json()["error"]["fields"]
    assert listed(client, registrar_key, "open") == []


def test_a_registered_instance_that_dies_is_checked_unhealthy_and_gets_no_traffic(
    client, upstream, registrar_key, instance_server
):
    make_route(
        make_service(
            "probed",
            upstream.url,
            allow_registration=True,
            health_path="/healthz",
            health_interval=0.3,
            health_timeout=0.2,
            healthy_threshold=1,
            unhealthy_threshold=1,
        ),
        "/probed",
    )
    publish()
    instance = instance_server("inst-1")
    assert register(client, registrar_key, "probed", "p-1", url=instance.url).status_code == 201

    def instance_state() -> str | None:
        found = registered_only(client, "probed")
        return found[0]["state"] if found else None

    assert eventually(lambda: instance_state() == "healthy")
    assert any(r["path"] == "/healthz" for r in received(instance))

    instance.stop()

    assert eventually(lambda: instance_state() == "unhealthy")
    [reported] = registered_only(client, "probed")
    assert reported["available"] is False
    assert reported["error"]
    assert [i["id"] for i in listed(client, registrar_key, "probed")] == ["p-1"]  # still there
    responses = [client.get("/probed") for _ in range(10)]
    assert [(r.status_code, r.headers.get("x-upstream")) for r in responses] == [(200, "up-a")] * 10


def test_a_registrar_for_one_service_cannot_register_in_another(client, open_service):
    make_service("other", allow_registration=True)
    publish()
    _, key = api_key_issue(
        owner=role_holder("scoped", f"{settings.PORTIER_REGISTRAR_ROLE}:open"), name="k"
    )

    assert register(client, key, "open", "o-1", url="http://127.0.0.1:9").status_code == 201
    refused = register(client, key, "other", "o-1", url="http://127.0.0.1:9")

    assert refused.status_code == 403
    assert error_code(refused) == "forbidden"


def test_only_the_registrar_of_an_instance_may_change_or_remove_it(
    client, open_service, registrar_key
):
    assert (
        register(client, registrar_key, "open", "mine", url="http://127.0.0.1:9").status_code == 201
    )
    _, rival = api_key_issue(owner=role_holder("rival", settings.PORTIER_REGISTRAR_ROLE), name="r")

    takeover = register(client, rival, "open", "mine", url="http://127.0.0.1:10")
    removal = client.delete(instances_url("open", "mine"), headers={"X-API-Key": rival})
    renewal = heartbeat(client, rival, "open", "mine")

    assert [takeover.status_code, removal.status_code, renewal.status_code] == [409, 409, 409]
    assert {error_code(r) for r in (takeover, removal, renewal)} == {"instance_owned"}
    assert [i["url"] for i in listed(client, registrar_key, "open")] == ["http://127.0.0.1:9"]
    _, admin_key = api_key_issue(owner=role_holder("boss", settings.PORTIER_ADMIN_ROLE), name="a")
    assert (
        client.delete(instances_url("open", "mine"), headers={"X-API-Key": admin_key}).status_code
        == 204
    )


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254", "http://[fe80::1]:8080", "http://0.0.0.0:8080"]
)
def test_it_refuses_link_local_and_unspecified_addresses(client, open_service, registrar_key, url):
    response = register(client, registrar_key, "open", "meta", url=url)

    assert response.status_code == 400
    assert listed(client, registrar_key, "open") == []


def test_an_instance_id_cannot_reach_the_registrys_own_lock(client, open_service, registrar_key):
    assert (
        register(client, registrar_key, "open", "lock", url="http://127.0.0.1:9").status_code == 201
    )
    assert (
        register(client, registrar_key, "open", "next", url="http://127.0.0.1:10").status_code
        == 201
    )

    assert sorted(i["id"] for i in listed(client, registrar_key, "open")) == ["lock", "next"]


def test_it_answers_503_when_a_key_cannot_be_checked(client, registrar_key, monkeypatch):
    make_service("keyless", "http://127.0.0.1:9", allow_registration=True)
    publish()
    monkeypatch.setattr(api_key_services, "_database_failed_at", float("-inf"))

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("connection failed: Connection refused")

    monkeypatch.setattr(ApiKey.objects, "select_related", refused)  # the key is in no cache yet

    response = register(client, registrar_key, "keyless", "k-1", url="http://127.0.0.1:9")

    assert response.status_code == 503  # "try again", not "your key is bad"
    assert error_code(response) == "identity_unavailable"

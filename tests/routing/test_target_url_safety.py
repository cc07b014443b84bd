"""Server-side request forgery: no target URL, wherever it enters (the admin's validation, which
the management API and the import run too, and the registry API), points the gateway at a
link-local or metadata address in any spelling; loopback, private ranges and host names stay
allowed, because real upstreams live there."""

from __future__ import annotations

import html
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.core.exceptions import ValidationError

from accounts.models import User
from accounts.services import api_key_issue
from routing.models import Service, Target
from routing.validators import validate_upstream_url
from tests.conftest import make_service, publish
from tests.routing.test_admin import service_form

METADATA = "The gateway may not call a cloud metadata service."
LINK_LOCAL = "Link-local addresses (169.254.0.0/16, fe80::/10) cannot be upstreams."
UNSPECIFIED = "An unspecified address (0.0.0.0, ::) cannot be an upstream."
ZONE_OR_ESCAPE = "A host may not be percent-encoded or carry an IPv6 zone id."

# Every spelling of a forbidden address that some resolver or HTTP stack reads as that address.
REFUSED = [
    ("http://169.254.169.254/latest/meta-data", METADATA),
    ("http://2852039166", METADATA),  # decimal
    ("http://0251.0376.0251.0376", METADATA),  # octal
    ("http://0xa9fea9fe", METADATA),  # hex
    ("http://0xA9.0xFE.0xA9.0xFE", METADATA),  # hex bytes
    ("http://169.254.43518", METADATA),  # short form: the last part fills two bytes
    ("http://169.16689662", METADATA),  # short form: the last part fills three bytes
    ("http://169.254.169.254.", METADATA),  # trailing dot
    ("http://[::ffff:169.254.169.254]", METADATA),  # IPv4-mapped IPv6
    ("http://[::ffff:a9fe:a9fe]", METADATA),  # IPv4-mapped IPv6, in hex
    ("http://[::169.254.169.254]", METADATA),  # IPv4-compatible IPv6
    ("http://[64:ff9b::a9fe:a9fe]", METADATA),  # NAT64
    ("http://[fd00:ec2::254]", METADATA),  # AWS over IPv6
    ("http://100.100.100.200", METADATA),  # Alibaba Cloud
    ("http://metadata.google.internal/computeMetadata/v1/", METADATA),
    ("http://METADATA.GOOGLE.INTERNAL.", METADATA),
    ("http://metadata", METADATA),
    ("http://instance-data", METADATA),
    ("http://169.254.1.1:8080", LINK_LOCAL),
    ("http://[fe80::1]:8080", LINK_LOCAL),
    ("http://[fe80::1%25eth0]:8080", ZONE_OR_ESCAPE),  # zone id
    ("http://%31%36%39.254.169.254", ZONE_OR_ESCAPE),  # percent-encoded host
    ("http://0.0.0.0:8080", UNSPECIFIED),
    ("http://0", UNSPECIFIED),
    ("http://[::]:8080", UNSPECIFIED),
    ("http://224.0.0.1", "A multicast address cannot be an upstream."),
    ("http://[ff02::1]", "A multicast address cannot be an upstream."),
    ("http://255.255.255.255", "A reserved or broadcast address cannot be an upstream."),
    ("http://999.1.1.1", "This host looks like an IPv4 address but is not a valid one."),
    ("http://user@10.0.0.5:8080", "Put credentials in route headers, not in the URL."),
    ("gopher://10.0.0.5:70", "Only http:// and https:// targets are supported."),
    ("file:///etc/passwd", "Only http:// and https:// targets are supported."),
]
REFUSED_IDS = [url for url, _ in REFUSED]

ALLOWED = [
    "http://127.0.0.1:8000",
    "http://127.0.0.1:8000/api",
    "http://10.0.0.5:8080",
    "http://172.16.3.4:8080",
    "http://192.168.1.20",
    "http://[::1]:8080",
    "http://[::ffff:127.0.0.1]:8080",
    "http://[fd12:3456::1]:8080",
    "http://localhost:3000",
    "https://users.example.com/api",
    "http://users.internal:8000",
]


def model_errors(url: str) -> list[str]:
    """What the admin (and the management API and the import: all run full_clean) says."""
    target = Target(service=Service.objects.create(name="svc"), url=url)
    try:
        target.full_clean()
    except ValidationError as exc:
        return exc.message_dict.get("url", [])
    return []


@pytest.mark.parametrize(("url", "message"), REFUSED, ids=REFUSED_IDS)
def test_the_rule_refuses_every_spelling_of_a_forbidden_upstream(url, message):
    with pytest.raises(ValidationError) as refused:
        validate_upstream_url(url)

    assert refused.value.messages == [message]


@pytest.mark.parametrize("url", [*ALLOWED, "http://users:8000/api"])
def test_the_rule_allows_loopback_private_addresses_and_host_names(url):
    validate_upstream_url(url)  # no ValidationError


@pytest.mark.django_db
@pytest.mark.parametrize(("url", "message"), REFUSED, ids=REFUSED_IDS)
def test_a_target_is_refused_for_every_spelling_of_a_forbidden_address(url, message):
    assert message in model_errors(url)


@pytest.mark.django_db
@pytest.mark.parametrize("url", ALLOWED)
def test_a_target_at_a_loopback_or_private_address_or_host_name_is_valid(url):
    assert model_errors(url) == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://[::ffff:169.254.169.254]", METADATA),
        ("http://[fe80::1]", LINK_LOCAL),
        ("http://metadata.google.internal", METADATA),
        ("http://2852039166", "Enter a valid URL."),  # the form's URL field refuses it first
    ],
)
def test_the_admin_form_refuses_a_forbidden_target_and_saves_nothing(admin_client, url, message):
    data = service_form(Service(name="sneaky")) | {
        "targets-TOTAL_FORMS": 1,
        "targets-0-url": url,
        "targets-0-weight": 100,
        "targets-0-enabled": "on",
    }

    response = admin_client.post("/admin/routing/service/add/", data)

    assert response.status_code == 200  # the form again, with its errors
    page = html.unescape(response.content.decode())
    assert message in page
    assert not Service.objects.filter(name="sneaky").exists()
    assert not Target.objects.exists()


# The registry: instances register themselves over HTTP on the running gateway.


@pytest.fixture
def registrar_key() -> str:
    user = User.objects.create_user("deployer", email="deployer@example.com", password="pw-9x")
    user.groups.add(Group.objects.get_or_create(name=settings.PORTIER_REGISTRAR_ROLE)[0])
    return api_key_issue(owner=user, name="ci")[1]


@pytest.fixture
def open_service() -> str:
    cache.delete_pattern("registry:*")
    make_service("open", allow_registration=True)
    publish()
    yield "open"
    cache.delete_pattern("registry:*")


def register(client: Any, key: str, url: str) -> Any:
    return client.put(
        "/registry/services/open/instances/i-1", json={"url": url}, headers={"X-API-Key": key}
    )


def registered(client: Any, key: str) -> list[str]:
    response = client.get("/registry/services/open/instances", headers={"X-API-Key": key})
    assert response.status_code == 200
    return [instance["url"] for instance in response.json()["instances"]]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("url", "message"), REFUSED, ids=REFUSED_IDS)
def test_the_registry_refuses_every_spelling_of_a_forbidden_address(
    client, open_service, registrar_key, url, message
):
    response = register(client, registrar_key, url)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert message in error["fields"]["url"]
    assert error["request_id"]
    assert registered(client, registrar_key) == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9", "http://10.0.0.5:8080", "http://192.168.1.20", "http://[::1]:9"]
)
def test_the_registry_accepts_loopback_and_private_addresses(
    client, open_service, registrar_key, url
):
    response = register(client, registrar_key, url)

    assert response.status_code == 201
    assert registered(client, registrar_key) == [url]

"""One rule for every upstream URL, wherever it enters: server-side request forgery stays out.

A target URL is where the gateway itself opens connections. Whoever can set one (an admin, an
automation through the management API, a declarative document, an instance registering itself)
could otherwise point the gateway at the cloud's metadata service (169.254.169.254: credentials
for the whole machine) and read its answers back through a route. So every entry point (the
Target model's clean(), which the admin, the management API and the import all run, and the
registry API) calls `validate_upstream_url`.

The rule:

- only http:// and https://, no credentials in the URL (`http://user@host`);
- a host written as an IP address in any spelling a resolver accepts (`2852039166`,
  `0251.0376.0251.0376`, `0xa9fea9fe`, `169.254.43518`, `[::ffff:169.254.169.254]`,
  `[::ffff:a9fe:a9fe]`, ...) is read the way inet_aton and the WHATWG URL standard read it, and
  refused when it is link-local (169.254.0.0/16, fe80::/10), a cloud metadata address,
  unspecified (0.0.0.0/8, ::), multicast, broadcast or reserved; an IPv4 address carried inside
  an IPv6 one (mapped, compatible, NAT64, 6to4) is judged as that IPv4 address;
- the metadata services' well-known names (metadata.google.internal, metadata, instance-data,
  ...) are refused; a host that is percent-encoded, carries a zone id (`%25eth0`), holds
  characters a host name cannot, or is not ASCII (write an internationalised name as xn--...) is
  refused, because another parser could read it as one of the addresses above;
- loopback (127.0.0.0/8, ::1) and the private ranges (10/8, 172.16/12, 192.168/16, fc00::/7)
  stay allowed: that is where real upstreams live.

Host names are not resolved here. A name's addresses change after validation (DNS rebinding), so
a check at save time proves nothing about the connection made later, and a validation that does
network I/O makes saving a route slow or fail when DNS is down. The gateway's operators choose
which resolvers the gateway uses; what this rule guarantees is that no URL *spells out* a
forbidden address or names a metadata service.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

__all__ = ["upstream_host_refusal", "validate_upstream_url"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The cloud providers' instance metadata services: AWS (IPv4 and IPv6), GCP, Azure, Oracle and
# OpenStack use 169.254.169.254 (link-local anyway); Alibaba Cloud uses 100.100.100.200.
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
        ipaddress.ip_address("fd00:ec2::254"),
        ipaddress.ip_address("100.100.100.200"),
    }
)
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
    }
)

_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # 0.x.y.z: "this host" to most stacks
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPATIBLE = ipaddress.ip_network("::/96")  # ::a.b.c.d, deprecated IPv4-compatible form
_HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")
_NUMBER = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")


def validate_upstream_url(url: str) -> None:
    """Raise ValidationError (a message an admin understands) unless the gateway may connect
    to this URL."""
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        parts.port  # noqa: B018  (a bad port raises here)
    except ValueError:
        raise ValidationError("This is not a valid URL.", code="invalid_url") from None
    if parts.scheme not in {"http", "https"}:
        raise ValidationError(
            "Only http:// and https:// targets are supported.", code="unsupported_scheme"
        )
    if "@" in parts.netloc:
        raise ValidationError(
            "Put credentials in route headers, not in the URL.", code="credentials_in_url"
        )
    if not hostname:
        raise ValidationError("The URL needs a host.", code="invalid_url")
    refusal = upstream_host_refusal(hostname)
    if refusal:
        raise ValidationError(refusal, code="forbidden_upstream")


def upstream_host_refusal(host: str) -> str | None:
    """Why the gateway may not connect to this host (a URL's host, without brackets), or None."""
    host = host.lower()
    if not host.isascii():
        return "Write an internationalised host name in its ASCII form (xn--...)."
    if "%" in host:
        return "A host may not be percent-encoded or carry an IPv6 zone id."
    if ":" in host:
        try:
            return _address_refusal(ipaddress.IPv6Address(host))
        except ValueError:
            return "This is not a valid IPv6 address."
    name = host.removesuffix(".")
    labels = name.split(".")
    # As the WHATWG URL standard (and so browsers, curl, most HTTP stacks) reads a host: one
    # whose last label is a number is an IPv4 address, in whatever spelling.
    if _NUMBER.match(labels[-1]):
        address = parse_ipv4(name)
        if address is None:
            return "This host looks like an IPv4 address but is not a valid one."
        return _address_refusal(address)
    if not _HOST_NAME.match(name):
        return "This is not a valid host name."
    if name in METADATA_NAMES:
        return "The gateway may not call a cloud metadata service."
    return None


def parse_ipv4(text: str) -> ipaddress.IPv4Address | None:
    """An IPv4 address in any spelling inet_aton accepts: 1 to 4 dot-separated parts, each
    decimal, octal (leading 0) or hex (0x); the last part fills the remaining bytes
    (`169.254.43518`, `2852039166`). None when it is not one."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers: list[int] = []
    for part in parts:
        if not _NUMBER.match(part):
            return None
        if part[:2].lower() == "0x":
            numbers.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part.startswith("0"):
            if any(digit in "89" for digit in part):
                return None
            numbers.append(int(part, 8))
        else:
            numbers.append(int(part))
    *leading, last = numbers
    if any(number > 255 for number in leading) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (and is routed to), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _address_refusal(address: IPAddress) -> str | None:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return _address_refusal(embedded)
    if address in METADATA_ADDRESSES:
        return "The gateway may not call a cloud metadata service."
    if address.is_loopback:
        return None
    if address.is_link_local:
        return "Link-local addresses (169.254.0.0/16, fe80::/10) cannot be upstreams."
    if address.is_unspecified or address in _THIS_NETWORK:
        return "An unspecified address (0.0.0.0, ::) cannot be an upstream."
    if address.is_multicast:
        return "A multicast address cannot be an upstream."
    if address.is_reserved or address == ipaddress.IPv4Address("255.255.255.255"):
        return "A reserved or broadcast address cannot be an upstream."
    return None

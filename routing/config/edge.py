"""The edge options a browser-facing gateway needs, set gateway-wide (GatewayDefaults) and per
route: CORS, security headers, the HTTPS redirect, IP allow and deny lists and compression.

Each has its shape check here, used by the models' clean() (so by the admin, the management API
and the declarative document alike), and its compiled spec, resolved once per publish: a route's
spec already holds the gateway-wide value it inherits, so the hot path reads one attribute and
parses nothing (routing.proxy.stages.edge applies them).

CORS (`cors`): `origins` (exact `scheme://host[:port]`, or `*` without credentials),
`origin_patterns` (`https://*.example.com`, `http://*.dev.example.com:*`: a leading `*.` stands
for one or more DNS labels in front of a domain of at least two labels; matched label by label,
never by a regex an Origin header could make slow), `methods`, `headers` (allowed request
headers; empty reflects what the preflight asks for), `expose_headers`, `credentials`,
`max_age` (seconds). On a route, absent or null inherits the gateway-wide block and `false`
turns CORS off.

Security headers (`security_headers`): keys laid over the built-in set below (and a route's over
the gateway-wide ones): `enabled`, `override` (replace an upstream's own value; off keeps it),
`content_type_options`, `frame_options` (DENY, SAMEORIGIN or "" for none), `referrer_policy`,
`cross_origin_resource_policy`, `content_security_policy` ("" for none), `hsts_max_age`
(0 for none; sent only over HTTPS), `hsts_include_subdomains`, `hsts_preload`, `hide_server`
(drop an upstream's Server and X-Powered-By).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SECURITY_DEFAULTS",
    "CorsSpec",
    "IpRules",
    "SecuritySpec",
    "compile_cors",
    "compile_ip_rules",
    "compile_security",
    "cors_errors",
    "ip_list_errors",
    "security_errors",
]

SECURITY_DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "override": False,
    "content_type_options": True,
    "frame_options": "DENY",
    "referrer_policy": "no-referrer",
    "cross_origin_resource_policy": "same-origin",
    "content_security_policy": "",
    "hsts_max_age": 31536000,
    "hsts_include_subdomains": True,
    "hsts_preload": False,
    "hide_server": True,
}
_REFERRER_POLICIES = frozenset(
    {
        "",
        "no-referrer",
        "no-referrer-when-downgrade",
        "origin",
        "origin-when-cross-origin",
        "same-origin",
        "strict-origin",
        "strict-origin-when-cross-origin",
        "unsafe-url",
    }
)
_CHOICES: dict[str, frozenset[str]] = {
    "frame_options": frozenset({"", "DENY", "SAMEORIGIN"}),
    "referrer_policy": _REFERRER_POLICIES,
    "cross_origin_resource_policy": frozenset({"", "same-origin", "same-site", "cross-origin"}),
}
_BOOLEANS = frozenset(
    {
        "enabled",
        "override",
        "content_type_options",
        "hsts_include_subdomains",
        "hsts_preload",
        "hide_server",
    }
)
_CORS_KEYS = frozenset(
    {"origins", "origin_patterns", "methods", "headers", "expose_headers", "credentials", "max_age"}
)
_ORIGIN = re.compile(
    r"^(https?)://([a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:.]+\])(:[0-9]{1,5})?$"
)
# `scheme://*.<two or more labels>[:port|:*]`: the wildcard only as the leftmost label(s).
_PATTERN = re.compile(
    r"^(https?)://\*\.((?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)"
    r"(?::([0-9]{1,5}|\*))?$"
)
_LONGEST_ORIGIN = 300  # longer Origin headers are never allowed (and never matched at length)
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_DEFAULT_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True, slots=True)
class OriginPattern:
    """`https://*.example.com`: the scheme, the suffix every allowed host ends with after at
    least one label of its own, and the port (None: the scheme's default only; "*": any)."""

    scheme: str
    suffix: str  # ".example.com"
    port: str | None

    def matches(self, scheme: str, host: str, port: str | None) -> bool:
        if scheme != self.scheme or not host.endswith(self.suffix):
            return False
        if len(host) == len(self.suffix) or host[0] == ".":
            return False
        return self.port == "*" or port == self.port


@dataclass(frozen=True, slots=True)
class CorsSpec:
    origins: frozenset[str]
    any_origin: bool  # `*`: every origin, answered with `*` (never with credentials)
    patterns: tuple[OriginPattern, ...]
    methods: bytes
    headers: bytes  # empty: reflect the preflight's Access-Control-Request-Headers
    expose_headers: bytes
    credentials: bool
    max_age: bytes  # empty: none sent

    def allows(self, origin: str) -> bool:
        if len(origin) > _LONGEST_ORIGIN:
            return False
        if self.any_origin or origin in self.origins:
            return True
        if not self.patterns:
            return False
        found = _ORIGIN.match(origin)  # linear: no nested repetition
        if found is None:
            return False
        scheme, host, port = found.group(1), found.group(2), found.group(6)
        port = port[1:] if port else None
        return any(pattern.matches(scheme, host, port) for pattern in self.patterns)


@dataclass(frozen=True, slots=True)
class SecuritySpec:
    headers: tuple[tuple[bytes, bytes], ...]  # sent over any scheme
    hsts: bytes  # Strict-Transport-Security over HTTPS; empty: none
    override: bool
    hide: frozenset[bytes]  # upstream headers dropped (Server, X-Powered-By)


@dataclass(frozen=True, slots=True)
class IpRules:
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    deny: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    def permits(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False  # no address to judge (a unix socket): refused when a list is set
        # An IPv4 client of a dual-stack listener (or proxy) arrives as ::ffff:a.b.c.d: judged
        # as both, so an IPv4 deny list is not stepped around by the mapped spelling.
        mapped = ip.ipv4_mapped if ip.version == 6 else None
        forms = (ip,) if mapped is None else (ip, mapped)
        if any(form in network for form in forms for network in self.deny):
            return False
        return not self.allow or any(form in network for form in forms for network in self.allow)


# -- CORS --------------------------------------------------------------------------------------


def cors_errors(data: Any, *, route: bool) -> list[str]:
    """What is wrong with a CORS block (a route's may also be `false`: off)."""
    if data is None or (route and data is False):
        return []
    if not isinstance(data, dict):
        off = ", or false to turn CORS off for this route" if route else ""
        return [f"Write CORS as an object (origins, methods, ...){off}."]
    errors = [
        f"{key}: unknown key; use {', '.join(sorted(_CORS_KEYS))}."
        for key in data
        if key not in _CORS_KEYS
    ]
    lists = {
        k: data.get(k, [])
        for k in ("origins", "origin_patterns", "methods", "headers", "expose_headers")
    }
    for key, value in lists.items():
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            errors.append(f"{key}: expected a list of text.")
            lists[key] = []
    credentials = data.get("credentials", False)
    if not isinstance(credentials, bool):
        errors.append("credentials: expected true or false.")
    for origin in lists["origins"]:
        if origin == "*":
            if credentials is True:
                errors.append(
                    "origins: `*` cannot be combined with credentials (browsers refuse it, and "
                    "reflecting every origin instead would hand any site the caller's session); "
                    "list the origins."
                )
        elif origin == "null":
            errors.append(
                "origins: `null` is what sandboxed frames and local files send; any site can "
                "produce it, so it is never allowed."
            )
        elif not _ORIGIN.match(origin):
            errors.append(
                f"origins: {origin!r} is not an origin; write scheme://host[:port] in lower "
                "case, without a path."
            )
    for pattern in lists["origin_patterns"]:
        if not _PATTERN.match(pattern):
            errors.append(
                f"origin_patterns: {pattern!r} is not an origin pattern; write "
                "scheme://*.<domain of two or more labels>[:port or :*] in lower case, e.g. "
                "https://*.example.com (the wildcard stands for one or more labels in front)."
            )
    for method in lists["methods"]:
        if not _TOKEN.match(method):
            errors.append(f"methods: {method!r} is not a method.")
    for key in ("headers", "expose_headers"):
        for name in lists[key]:
            if not _TOKEN.match(name):
                errors.append(f"{key}: {name!r} is not a header name.")
    max_age = data.get("max_age")
    if max_age is not None and (
        isinstance(max_age, bool) or not isinstance(max_age, int) or not 0 <= max_age <= 86400
    ):
        errors.append("max_age: expected whole seconds from 0 to 86400.")
    return errors


def compile_cors(data: Any, *, route: bool = False) -> CorsSpec | None:
    """The compiled CORS rules, or None for none; ValueError for a block validation refuses."""
    if data is None or data is False:
        return None
    errors = cors_errors(data, route=route)
    if errors:
        raise ValueError("; ".join(errors))
    origins = data.get("origins", [])
    max_age = data.get("max_age")
    return CorsSpec(
        origins=frozenset(o for o in origins if o != "*"),
        any_origin="*" in origins,
        patterns=tuple(_origin_pattern(p) for p in data.get("origin_patterns", [])),
        methods=", ".join(m.upper() for m in data.get("methods") or _DEFAULT_METHODS).encode(),
        headers=", ".join(data.get("headers", [])).encode("latin-1"),
        expose_headers=", ".join(data.get("expose_headers", [])).encode("latin-1"),
        credentials=bool(data.get("credentials", False)),
        max_age=str(max_age).encode() if max_age is not None else b"",
    )


def _origin_pattern(pattern: str) -> OriginPattern:
    found = _PATTERN.match(pattern)
    assert found is not None  # checked by cors_errors
    return OriginPattern(scheme=found.group(1), suffix="." + found.group(2), port=found.group(3))


# -- Security headers --------------------------------------------------------------------------


def security_errors(data: Any) -> list[str]:
    if data is None:
        return []
    if not isinstance(data, dict):
        return ['Write the security headers as an object (e.g. {"override": true}).']
    errors: list[str] = []
    for key, value in data.items():
        if key not in SECURITY_DEFAULTS:
            errors.append(f"{key}: unknown key; use {', '.join(SECURITY_DEFAULTS)}.")
        elif key in _BOOLEANS:
            if not isinstance(value, bool):
                errors.append(f"{key}: expected true or false.")
        elif key == "hsts_max_age":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**9:
                errors.append("hsts_max_age: expected whole seconds, 0 for none.")
        elif not isinstance(value, str) or any(ch in value for ch in "\r\n\x00"):
            errors.append(f"{key}: expected one line of text.")
        elif key in _CHOICES and value not in _CHOICES[key]:
            choices = ", ".join(repr(c) for c in sorted(_CHOICES[key]))
            errors.append(f"{key}: {value!r} is not one of {choices}.")
    return errors


def compile_security(*layers: Any) -> SecuritySpec | None:
    """The security headers from the built-in set with each layer's keys laid over it (the
    gateway-wide block, then a route's). None when they are turned off."""
    values = dict(SECURITY_DEFAULTS)
    for layer in layers:
        errors = security_errors(layer)
        if errors:
            raise ValueError("; ".join(errors))
        values.update(layer or {})
    if not values["enabled"]:
        return None
    headers: list[tuple[bytes, bytes]] = []
    if values["content_type_options"]:
        headers.append((b"x-content-type-options", b"nosniff"))
    for key, name in (
        ("frame_options", b"x-frame-options"),
        ("referrer_policy", b"referrer-policy"),
        ("cross_origin_resource_policy", b"cross-origin-resource-policy"),
        ("content_security_policy", b"content-security-policy"),
    ):
        if values[key]:
            headers.append((name, values[key].encode("latin-1")))
    hsts = b""
    if values["hsts_max_age"]:
        hsts = f"max-age={values['hsts_max_age']}".encode()
        if values["hsts_include_subdomains"]:
            hsts += b"; includeSubDomains"
        if values["hsts_preload"]:
            hsts += b"; preload"
    return SecuritySpec(
        headers=tuple(headers),
        hsts=hsts,
        override=bool(values["override"]),
        hide=frozenset({b"server", b"x-powered-by"}) if values["hide_server"] else frozenset(),
    )


# -- IP lists ----------------------------------------------------------------------------------


def ip_list_errors(data: Any) -> list[str]:
    if data in (None, []):
        return []
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        return ['Write a list of addresses or networks, e.g. ["10.0.0.0/8", "192.0.2.7"].']
    errors = []
    for item in data:
        try:
            ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            errors.append(f"{item!r} is not an IP address or CIDR network.")
    return errors


def compile_ip_rules(allow: Any, deny: Any) -> IpRules | None:
    if not allow and not deny:
        return None
    errors = ip_list_errors(allow) + ip_list_errors(deny)
    if errors:
        raise ValueError("; ".join(errors))
    return IpRules(
        allow=tuple(ipaddress.ip_network(i.strip(), strict=False) for i in allow or ()),
        deny=tuple(ipaddress.ip_network(i.strip(), strict=False) for i in deny or ()),
    )

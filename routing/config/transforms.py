"""A route's transform rules: their shape, checked by Route.clean (so by the admin, the management
API and the declarative document alike), and their compiled form, which the transform stage
(routing.proxy.stages.transform) and the answer's way out (routing.proxy.stages.edge) apply.

    request:  headers {set, add, remove, rename}, query {set, add, remove, rename},
              body {set, remove, rename}  (top-level fields of a JSON object)
    response: headers {set, add, remove, rename}

Applied in the order remove, rename, set (replaces every value, or adds one), add (one more
value, keeping the others). Values may hold placeholders, filled per request: `$user_id`,
`$email`, `$roles`, `$request_id`, `$client_ip`, `$route`, and a regex route's named groups as
`$path.<group>`; `$$` is a literal dollar. A header whose value renders empty (`$user_id` of an
anonymous caller) is not sent. The headers the gateway vouches for (identity, X-Forwarded-*, the
request id, the trace context, framing) are out of a transform's reach: naming one is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from routing.proxy.headers import (
    ALWAYS_DROPPED,
    HOP_BY_HOP,
    IDENTITY_NAMES,
    PROXY_NAMES,
    identity_prefixes,
)

__all__ = [
    "FieldRules",
    "HeaderRules",
    "Template",
    "TransformSpec",
    "compile_transform",
    "template_groups",
    "transform_errors",
]

PLACEHOLDERS = ("user_id", "email", "roles", "request_id", "client_ip", "route")
_PLACEHOLDER = re.compile(r"\$(\$|path\.[A-Za-z_][A-Za-z0-9_]*|[a-z_]+)")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_FIELD_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,256}$")
# What only the gateway says to an upstream (routing.proxy.stages.transform) or to a client.
_GATEWAY_REQUEST_HEADERS = frozenset(
    {
        b"host",
        b"content-length",
        b"expect",
        b"x-request-id",
        b"traceparent",
        b"tracestate",
        b"authorization",
        b"x-api-key",
    }
)
_GATEWAY_RESPONSE_HEADERS = frozenset({b"content-length", b"content-encoding", b"x-request-id"})
_OPERATIONS = {
    ("request", "headers"): ("set", "add", "remove", "rename"),
    ("request", "query"): ("set", "add", "remove", "rename"),
    ("request", "body"): ("set", "remove", "rename"),
    ("response", "headers"): ("set", "add", "remove", "rename"),
}


@dataclass(frozen=True, slots=True)
class Template:
    """A value with placeholders: `parts` alternates literal text and placeholder names."""

    parts: tuple[str, ...]

    @property
    def literal(self) -> str | None:
        """The value when it holds no placeholder (rendered once, at compile time)."""
        return self.parts[0] if len(self.parts) == 1 else None

    def render(self, value_of: Callable[[str], str]) -> str:
        return "".join(
            part if index % 2 == 0 else value_of(part) for index, part in enumerate(self.parts)
        )


@dataclass(frozen=True, slots=True)
class HeaderRules:
    remove: frozenset[bytes]
    rename: tuple[tuple[bytes, bytes], ...]
    set: tuple[tuple[bytes, Template], ...]
    add: tuple[tuple[bytes, Template], ...]


@dataclass(frozen=True, slots=True)
class FieldRules:
    """Query parameters or top-level JSON body fields. A body's `set` value that is not a string
    is sent as the JSON it is."""

    remove: frozenset[str]
    rename: tuple[tuple[str, str], ...]
    set: tuple[tuple[str, Any], ...]
    add: tuple[tuple[str, Template], ...] = ()


@dataclass(frozen=True, slots=True)
class TransformSpec:
    request_headers: HeaderRules | None
    query: FieldRules | None
    body: FieldRules | None
    response_headers: HeaderRules | None


def template_of(text: str) -> Template:
    parts: list[str] = []
    literal: list[str] = []
    position = 0
    for found in _PLACEHOLDER.finditer(text):
        literal.append(text[position : found.start()])
        position = found.end()
        name = found.group(1)
        if name == "$":
            literal.append("$")
            continue
        parts += ["".join(literal), name]
        literal = []
    literal.append(text[position:])
    parts.append("".join(literal))
    return Template(tuple(parts))


def template_groups(data: Any) -> set[str]:
    """The `$path.<group>` names a transform's values use (Route.clean checks them against the
    route's regex)."""
    groups: set[str] = set()
    for value in _values(data):
        for name in template_of(value).parts[1::2]:
            if name.startswith("path."):
                groups.add(name[5:])
    return groups


def _values(data: Any) -> list[str]:
    found: list[str] = []
    if not isinstance(data, dict):
        return found
    for side in data.values():
        if not isinstance(side, dict):
            continue
        for rules in side.values():
            if not isinstance(rules, dict):
                continue
            for operation in ("set", "add"):
                values = rules.get(operation)
                if isinstance(values, dict):
                    found += [v for v in values.values() if isinstance(v, str)]
    return found


def transform_errors(data: Any, identity_extra: tuple[str, ...] = ()) -> list[str]:
    """What is wrong with a transform block, one line per problem (empty when it is sound)."""
    if data in (None, {}):
        return []
    if not isinstance(data, dict):
        return ["Write the transform as an object with `request` and/or `response`."]
    errors: list[str] = []
    for side, parts in data.items():
        if side not in ("request", "response") or not isinstance(parts, dict):
            errors.append(f"{side}: expected `request` or `response`, each an object.")
            continue
        for part, rules in parts.items():
            operations = _OPERATIONS.get((side, part))
            where = f"{side}.{part}"
            if operations is None:
                known = ", ".join(p for s, p in _OPERATIONS if s == side)
                errors.append(f"{where}: unknown; a {side} transforms {known}.")
                continue
            if not isinstance(rules, dict):
                errors.append(f"{where}: expected an object of {', '.join(operations)}.")
                continue
            errors += _rules_errors(where, part, side, rules, operations, identity_extra)
    return errors


def _rules_errors(
    where: str,
    part: str,
    side: str,
    rules: dict[str, Any],
    operations: tuple[str, ...],
    identity_extra: tuple[str, ...],
) -> list[str]:
    errors: list[str] = []
    for operation, value in rules.items():
        at = f"{where}.{operation}"
        if operation not in operations:
            errors.append(f"{at}: unknown; use {', '.join(operations)}.")
            continue
        if operation == "remove":
            if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
                errors.append(f"{at}: expected a list of names.")
                continue
            names = value
        elif not isinstance(value, dict):
            errors.append(f"{at}: expected an object of name to value.")
            continue
        elif operation == "rename":
            if not all(isinstance(v, str) for v in value.values()):
                errors.append(f"{at}: each name is renamed to a name (text).")
                continue
            names = [*value, *value.values()]
        else:
            names = list(value)
            errors += _value_errors(at, part, value)
        errors += _name_errors(at, part, side, names, identity_extra)
    return errors


def _value_errors(at: str, part: str, values: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    for name, value in values.items():
        if not isinstance(value, str):
            if part != "body":  # a body field may be set to any JSON value
                errors.append(f"{at}.{name}: expected text.")
            continue
        if part == "headers" and any(ch in value for ch in "\r\n\x00"):
            errors.append(f"{at}.{name}: a header value cannot hold a line break or NUL.")
        for placeholder in template_of(value).parts[1::2]:
            if placeholder not in PLACEHOLDERS and not placeholder.startswith("path."):
                known = ", ".join(f"${p}" for p in PLACEHOLDERS)
                errors.append(
                    f"{at}.{name}: unknown placeholder ${placeholder}; use {known}, "
                    "$path.<group> or $$ for a dollar sign."
                )
    return errors


def _name_errors(
    at: str, part: str, side: str, names: list[str], identity_extra: tuple[str, ...]
) -> list[str]:
    errors: list[str] = []
    for name in names:
        if part != "headers":
            if not _FIELD_NAME.match(name):
                errors.append(f"{at}: {name!r} is not a usable {part} field name.")
            continue
        if not _HEADER_NAME.match(name):
            errors.append(f"{at}: {name!r} is not a header name.")
        elif guarded_header(name.lower().encode("latin-1"), side, identity_extra):
            errors.append(f"{at}: {name} is set by the gateway itself and cannot be transformed.")
    return errors


def guarded_header(name: bytes, side: str, identity_extra: tuple[str, ...] = ()) -> bool:
    """Is this (lower-case) header the gateway's own business on that side of the proxy?"""
    if name in HOP_BY_HOP:
        return True
    if side == "response":
        return name in _GATEWAY_RESPONSE_HEADERS
    return (
        name in _GATEWAY_REQUEST_HEADERS
        or name in ALWAYS_DROPPED  # path overrides and httpoxy's Proxy, never sent upstream
        or name in IDENTITY_NAMES
        or name in PROXY_NAMES
        or name.startswith(b"x-forwarded-")
        or name.startswith(identity_prefixes(identity_extra))
        or b"_" in name
    )


def compile_transform(data: Any, identity_extra: tuple[str, ...] = ()) -> TransformSpec | None:
    """The compiled rules, or None for a route without any. Raises ValueError on a block that
    would be refused by `transform_errors` (data that bypassed validation)."""
    if not data:
        return None
    errors = transform_errors(data, identity_extra)
    if errors:
        raise ValueError("; ".join(errors))
    request = data.get("request") or {}
    response = data.get("response") or {}
    spec = TransformSpec(
        request_headers=_header_rules(request.get("headers")),
        query=_field_rules(request.get("query")),
        body=_field_rules(request.get("body"), body=True),
        response_headers=_header_rules(response.get("headers")),
    )
    if spec == TransformSpec(None, None, None, None):
        return None
    return spec


def _lower(name: str) -> bytes:
    return name.lower().encode("latin-1")


def _header_rules(rules: dict[str, Any] | None) -> HeaderRules | None:
    if not rules:
        return None
    return HeaderRules(
        remove=frozenset(_lower(n) for n in rules.get("remove", ())),
        rename=tuple((_lower(a), _lower(b)) for a, b in rules.get("rename", {}).items()),
        set=tuple((_lower(n), template_of(v)) for n, v in rules.get("set", {}).items()),
        add=tuple((_lower(n), template_of(v)) for n, v in rules.get("add", {}).items()),
    )


def _field_rules(rules: dict[str, Any] | None, *, body: bool = False) -> FieldRules | None:
    if not rules:
        return None
    return FieldRules(
        remove=frozenset(rules.get("remove", ())),
        rename=tuple(rules.get("rename", {}).items()),
        set=tuple(
            (name, template_of(value) if isinstance(value, str) else value)
            for name, value in rules.get("set", {}).items()
        ),
        add=() if body else tuple((n, template_of(v)) for n, v in rules.get("add", {}).items()),
    )

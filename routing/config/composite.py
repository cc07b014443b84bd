"""Composite routes: one request, several services called, their JSON merged into one answer.

A route's `backends` (null: an ordinary route) is a list of at most MAX_BACKENDS objects:

    [{service: users, path: "/users/$user_id", key: user},
     {service: orders, path: "/orders?user={user.id}", key: orders, fields: [id, total],
      timeout: 2}]

- `service`: the name of the service called (its targets, balancing, health and in-flight cap
  are the service's own); required.
- `path`: what the service is asked for, starting with /, a query allowed. It may hold the
  transforms' placeholders (`$user_id`, `$email`, `$roles`, `$request_id`, `$client_ip`,
  `$route`, `$path.<group>` of a regex route, `$$` for a dollar sign: routing.config.transforms)
  and references `{key.field}` (`{user.address.city}`, `{orders.0.id}`) to a field of an
  earlier backend's answer: that backend is named by its `key`, must come earlier in the list,
  and this one waits for it. Values are percent-encoded where they land.
- `key`: where the answer goes in the merged object; left out, an object answer's top-level
  fields are merged into it.
- `fields`: the top-level fields kept (of an object, or of each object of a list).
- `timeout`: seconds this backend may take, from connecting to the end of its answer; left out,
  the service's read timeout.

The shape is checked by Route.clean (so by the admin, the management API and the declarative
document alike); that each service exists is a cross-object rule (routing.rules). Compiled, a
backend holds its service's spec: a backend whose service is not served (disabled, or gone)
fails the compile and the route is skipped, as any route that cannot be compiled is.
routing.proxy.aggregate runs the compiled form.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from routing.config.transforms import PLACEHOLDERS, template_of

if TYPE_CHECKING:
    from routing.config.spec import ServiceSpec

__all__ = [
    "MAX_BACKENDS",
    "BackendSpec",
    "CompositeSpec",
    "Placeholder",
    "Reference",
    "backend_errors",
    "backend_groups",
    "backend_services",
    "compile_composite",
]

MAX_BACKENDS = 10
MAX_TIMEOUT = 300.0
_KEYS = ("service", "path", "key", "fields", "timeout")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_FIELD = re.compile(r"^[^\x00-\x1f\x7f]{1,256}$")
_SERVICE = re.compile(r"^[-a-zA-Z0-9_]{1,100}$")  # a Service name (a slug)
# Visible ASCII: a space or a non-ASCII character must be percent-encoded, and a fragment is
# never sent.
_PATH = re.compile(r"^/[\x21-\x22\x24-\x7e]*$")
_REFERENCE = re.compile(r"\{([^{}]*)\}")
_REFERENCE_BODY = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)((?:\.[A-Za-z0-9_-]+)+)$")


@dataclass(frozen=True, slots=True)
class Placeholder:
    """`$name`: a value of the request (routing.proxy.rewrite.placeholder_values)."""

    name: str


@dataclass(frozen=True, slots=True)
class Reference:
    """`{key.field...}`: a field of an earlier backend's answer."""

    key: str
    fields: tuple[str, ...]


Piece = str | Placeholder | Reference


@dataclass(frozen=True, slots=True)
class BackendSpec:
    name: str  # what X-Portier-Failed calls it: its key, else its service
    service: ServiceSpec
    path: tuple[Piece, ...]  # the path part, pre-split
    query: tuple[Piece, ...] | None  # after the `?`; None: no query
    key: str | None  # None: merged at the top level
    fields: frozenset[str] | None  # None: every field kept
    timeout: float  # seconds, connect to the answer's end
    after: frozenset[str]  # keys of the earlier backends whose answers the path uses


@dataclass(frozen=True, slots=True)
class CompositeSpec:
    """A composite route's backends, compiled, in the order they are listed (and merged)."""

    backends: tuple[BackendSpec, ...]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def backend_errors(value: Any, path_groups: frozenset[str] | None = None) -> list[str]:
    """What is wrong with a route's backends, one line per problem (empty when sound).

    `path_groups`: the route's regex groups, which `$path.<group>` may name (None: not checked).
    """
    if value is None:
        return []
    if not isinstance(value, list) or not value:
        return [
            'Write the backends as a list of objects, e.g. [{"service": "users", "path": '
            '"/users/$user_id", "key": "user"}]; leave it empty for an ordinary route.'
        ]
    if len(value) > MAX_BACKENDS:
        return [f"A composite route calls at most {MAX_BACKENDS} backends."]
    errors: list[str] = []
    keys: list[str] = []
    for number, backend in enumerate(value, start=1):
        where = f"backend {number}"
        if not isinstance(backend, dict):
            errors.append(f"{where}: expected an object with service and path.")
            continue
        errors += [
            f"{where}: {name}: unknown key; use {', '.join(_KEYS)}."
            for name in backend
            if name not in _KEYS
        ]
        service = backend.get("service")
        if not isinstance(service, str) or not _SERVICE.match(service):
            errors.append(f"{where}: service: required: the name of the service to call.")
        errors += _path_errors(where, backend.get("path"), keys, path_groups)
        key = backend.get("key")
        if key is not None:
            if not isinstance(key, str) or not _KEY.match(key):
                errors.append(
                    f"{where}: key: expected a name of letters, digits, _ and - (not starting "
                    "with a digit), at most 64."
                )
            elif key in keys:
                errors.append(f"{where}: key: {key!r} is already another backend's key.")
            else:
                keys.append(key)
        fields = backend.get("fields")
        if fields is not None and (
            not isinstance(fields, list)
            or not fields
            or not all(isinstance(f, str) and _FIELD.match(f) for f in fields)
        ):
            errors.append(f"{where}: fields: expected a list of field names.")
        timeout = backend.get("timeout")
        if timeout is not None and not (_number(timeout) and 0 < timeout <= MAX_TIMEOUT):
            errors.append(f"{where}: timeout: expected seconds above 0, at most {MAX_TIMEOUT:g}.")
    return errors


def _path_errors(
    where: str, path: Any, keys: list[str], path_groups: frozenset[str] | None
) -> list[str]:
    if not isinstance(path, str) or not path.startswith("/"):
        return [f"{where}: path: required: the path to call, starting with /."]
    if not _PATH.match(path):
        return [
            f"{where}: path: use visible ASCII without # (percent-encode spaces and other "
            "characters)."
        ]
    errors: list[str] = []
    try:
        pieces = _pieces(path)
    except ValueError as exc:
        return [f"{where}: path: {exc}"]
    for piece in pieces:
        if isinstance(piece, Reference) and piece.key not in keys:
            errors.append(
                f"{where}: path: {{{piece.key}...}} names no earlier backend's key; a "
                "reference reads the answer of a backend listed before this one."
            )
        elif isinstance(piece, Placeholder):
            name = piece.name
            if name.startswith("path."):
                if path_groups is not None and name[5:] not in path_groups:
                    errors.append(
                        f"{where}: path: ${name}: the route's path has no named group "
                        f"{name[5:]!r} (only regex routes have them)."
                    )
            elif name not in PLACEHOLDERS:
                known = ", ".join(f"${p}" for p in PLACEHOLDERS)
                errors.append(
                    f"{where}: path: unknown placeholder ${name}; use {known}, $path.<group>, "
                    "{key.field} or $$ for a dollar sign."
                )
    return errors


def _pieces(text: str) -> list[Piece]:
    """Literal text, placeholders and references, in order; ValueError for a stray brace."""
    pieces: list[Piece] = []
    position = 0
    for found in _REFERENCE.finditer(text):
        pieces += _placeholders(text[position : found.start()])
        body = _REFERENCE_BODY.match(found.group(1))
        if body is None:
            raise ValueError(
                f"{found.group(0)} is not a reference; write {{key.field}} (a field of an "
                "earlier backend's answer), or %7B and %7D for braces."
            )
        pieces.append(Reference(body.group(1), tuple(body.group(2)[1:].split("."))))
        position = found.end()
    rest = text[position:]
    if "{" in rest or "}" in rest:
        raise ValueError("a brace without its pair; write %7B and %7D for braces.")
    pieces += _placeholders(rest)
    return [piece for piece in pieces if piece != ""]


def _placeholders(text: str) -> list[Piece]:
    parts = template_of(text).parts
    return [part if index % 2 == 0 else Placeholder(part) for index, part in enumerate(parts)]


def backend_groups(value: Any) -> set[str]:
    """The `$path.<group>` names the backends' paths use."""
    groups: set[str] = set()
    for backend in value if isinstance(value, list) else ():
        path = backend.get("path") if isinstance(backend, dict) else None
        if not isinstance(path, str):
            continue
        try:
            pieces = _pieces(path)
        except ValueError:
            continue
        groups |= {
            p.name[5:] for p in pieces if isinstance(p, Placeholder) and p.name.startswith("path.")
        }
    return groups


def backend_services(value: Any) -> list[str]:
    """The service names the backends call, in order, each once."""
    names: list[str] = []
    for backend in value if isinstance(value, list) else ():
        service = backend.get("service") if isinstance(backend, dict) else None
        if isinstance(service, str) and service not in names:
            names.append(service)
    return names


def compile_composite(value: Any, services: Mapping[str, ServiceSpec]) -> CompositeSpec | None:
    """The compiled backends, or None for an ordinary route. Raises ValueError on backends that
    `backend_errors` refuses, or whose service is not in `services` (the ones served)."""
    if value is None:
        return None
    errors = backend_errors(value)
    if errors:
        raise ValueError("; ".join(errors))
    compiled: list[BackendSpec] = []
    for backend in value:
        name = backend["service"]
        service = services.get(name)
        if service is None:
            raise ValueError(f"backend service {name!r} is not served (disabled or deleted)")
        path, question, query = backend["path"].partition("?")
        path_pieces = tuple(_pieces(path))
        query_pieces = tuple(_pieces(query)) if question else None
        key = backend.get("key")
        fields = backend.get("fields")
        timeout = backend.get("timeout")
        compiled.append(
            BackendSpec(
                name=key or name,
                service=service,
                path=path_pieces,
                query=query_pieces,
                key=key,
                fields=None if fields is None else frozenset(fields),
                timeout=float(timeout) if timeout is not None else service.read_timeout,
                after=frozenset(
                    p.key for p in (*path_pieces, *(query_pieces or ())) if isinstance(p, Reference)
                ),
            )
        )
    return CompositeSpec(tuple(compiled))

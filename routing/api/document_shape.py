"""The declarative document's shape: which document key is which model field, how values are
spelt on each side, and the type checks that run before any model sees a value.

The models stay the source of truth for defaults, choices and validation (their `clean()` is the
admin's); this module only translates between a row and its plain-data form, so export, import
and the diff all speak the same vocabulary (docs/configuration.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import models

from routing.api.document_spellings import (
    ADDRESSES,
    BACKENDS_OR_NULL,
    BOOL,
    BOOL_OR_NULL,
    CACHE_OR_NULL,
    HEADERS,
    INT,
    INT_OR_NULL,
    NAMES,
    NUMBER,
    ROUTE_CORS,
    SECURITY_OR_NULL,
    STATUSES,
    STR,
    TRANSFORM,
    Spelling,
    as_is,
)
from routing.models import RateLimitTier, RolePolicy, Route, Service, Target

__all__ = [
    "KINDS",
    "DocumentInvalid",
    "Field",
    "Kind",
    "compact",
    "flatten",
    "policy_data",
    "route_data",
    "service_data",
    "set_fields",
    "shape_errors",
    "tier_data",
]


class DocumentInvalid(Exception):
    """The document cannot be applied; `errors` holds one line per problem, each naming the
    path of the bad field, e.g. "routes[3].path: ..." or "services[0].targets[1].url: ..."."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Field:
    """One model field as the document spells it: `key` is dotted for a field inside a block
    (timeouts.connect)."""

    key: str
    attr: str
    spelling: Spelling

    def default(self, model: type[models.Model]) -> Any:
        return self.spelling.to_doc(model._meta.get_field(self.attr).get_default())


@dataclass(frozen=True)
class Kind:
    """One list of the document (services, routes, ...): its model and the keys it accepts."""

    section: str
    model: type[models.Model]
    fields: tuple[Field, ...]
    # Keys handled by hand (names of related objects, targets), with their spellings.
    relations: dict[str, Spelling]
    required: tuple[str, ...]
    order: tuple[str, ...]  # top-level key order in an export

    def field_key(self, attr: str) -> str:
        """The document key of a model field, for error messages."""
        for field in self.fields:
            if field.attr == attr:
                return field.key
        return {"role_policy": "policy", "rate_limit_tier": "tier"}.get(attr, attr)

    def defaults(self) -> dict[str, Any]:
        return {field.key: field.default(self.model) for field in self.fields}

    def blocks(self) -> set[str]:
        """Keys grouping dotted fields (timeouts), unlike mapping values (headers, transform)."""
        return {field.key.partition(".")[0] for field in self.fields if "." in field.key}


TARGET_FIELDS = (
    Field("url", "url", STR),
    Field("weight", "weight", INT),
    Field("enabled", "enabled", BOOL),
)

SERVICES = Kind(
    section="services",
    model=Service,
    fields=(
        Field("description", "description", STR),
        Field("enabled", "enabled", BOOL),
        Field("balancing", "balancing", STR),
        Field("hash_on", "hash_on", STR),
        Field("hash_header", "hash_header", STR),
        Field("timeouts.connect", "connect_timeout", NUMBER),
        Field("timeouts.read", "read_timeout", NUMBER),
        Field("timeouts.write", "write_timeout", NUMBER),
        Field("timeouts.total", "total_timeout", NUMBER),
        Field("retries", "retries", INT),
        Field("retry_statuses", "retry_statuses", STATUSES),
        Field("max_in_flight", "max_in_flight", INT),
        Field("health.path", "health_path", STR),
        Field("health.interval", "health_interval", NUMBER),
        Field("health.timeout", "health_timeout", NUMBER),
        Field("health.healthy_threshold", "healthy_threshold", INT),
        Field("health.unhealthy_threshold", "unhealthy_threshold", INT),
        Field("circuit_breaker.failures", "breaker_failures", INT),
        Field("circuit_breaker.statuses", "breaker_statuses", STATUSES),
        Field("circuit_breaker.cooldown", "breaker_cooldown", NUMBER),
        Field("allow_registration", "allow_registration", BOOL),
    ),
    relations={
        "targets": Spelling("a list of targets", lambda v: isinstance(v, list), as_is, as_is)
    },
    required=("name",),
    order=(
        "name",
        "description",
        "enabled",
        "targets",
        "balancing",
        "hash_on",
        "hash_header",
        "timeouts",
        "retries",
        "retry_statuses",
        "max_in_flight",
        "health",
        "circuit_breaker",
        "allow_registration",
    ),
)

POLICIES = Kind(
    section="policies",
    model=RolePolicy,
    fields=(
        Field("kind", "kind", STR),
        Field("report_only", "report_only", BOOL),
        Field("description", "description", STR),
    ),
    relations={"roles": NAMES},
    required=("name",),
    order=("name", "kind", "roles", "report_only", "description"),
)

TIERS = Kind(
    section="tiers",
    model=RateLimitTier,
    fields=(
        Field("rate", "rate", STR),
        Field("key", "key", STR),
        Field("header_name", "header_name", STR),
        Field("per_method", "per_method", BOOL),
        Field("report_only", "report_only", BOOL),
        Field("description", "description", STR),
    ),
    relations={},
    required=("name", "rate"),
    order=("name", "rate", "key", "header_name", "per_method", "report_only", "description"),
)

# The edge options (routing.config.edge and .transforms), each spelt as its JSON column.
ROUTE_EDGE_KEYS = (
    Field("transform", "transform", TRANSFORM),
    Field("cors", "cors", ROUTE_CORS),
    Field("security_headers", "security_headers", SECURITY_OR_NULL),
    Field("https_redirect", "https_redirect", BOOL_OR_NULL),
    Field("compression", "compression", BOOL_OR_NULL),
    Field("ip_allow", "ip_allow", ADDRESSES),
    Field("ip_deny", "ip_deny", ADDRESSES),
    # The response cache (routing.config.cache). Its `cache_generation` (bumped by a purge) is
    # state, not configuration: never exported nor accepted, and an import leaves it alone.
    Field("cache", "cache", CACHE_OR_NULL),
)
# WebSocket relay (routing.proxy.websocket) and composite routes (routing.config.composite).
ROUTE_REALTIME_KEYS = (
    Field("websocket", "websocket", BOOL),
    Field("websocket_idle_timeout", "websocket_idle_timeout", NUMBER),
    Field("websocket_max_connections", "websocket_max_connections", INT),
    Field("backends", "backends", BACKENDS_OR_NULL),
)

_NAME_OR_NULL = Spelling("a name or null", lambda v: v is None or isinstance(v, str), as_is, as_is)

ROUTES = Kind(
    section="routes",
    model=Route,
    fields=(
        Field("enabled", "enabled", BOOL),
        Field("priority", "priority", INT),
        Field("match", "match_type", STR),
        Field("path", "path", STR),
        Field("methods", "methods", NAMES),
        Field("hosts", "hosts", NAMES),
        Field("headers", "header_matches", HEADERS),
        Field("strip_prefix", "strip_prefix", BOOL),
        Field("rewrite", "rewrite", STR),
        Field("preserve_host", "preserve_host", BOOL),
        Field("forward_authorization", "forward_authorization", BOOL),
        Field("retry_unsafe_methods", "retry_unsafe_methods", BOOL),
        Field("stream_uploads", "stream_uploads", BOOL),
        Field("max_body_bytes", "max_body_bytes", INT_OR_NULL),
        Field("audit", "audit", BOOL),
        *ROUTE_EDGE_KEYS,
        *ROUTE_REALTIME_KEYS,
    ),
    relations={
        "service": STR,
        "policy": _NAME_OR_NULL,
        "tier": _NAME_OR_NULL,
        "tiers_by_role": Spelling(
            "a mapping of role to tier name",
            lambda v: (
                isinstance(v, dict) and all(isinstance(x, str) for kv in v.items() for x in kv)
            ),
            as_is,
            as_is,
        ),
    },
    required=("name", "service", "path"),
    order=(
        "name",
        "service",
        "enabled",
        "priority",
        "match",
        "path",
        "methods",
        "hosts",
        "headers",
        "strip_prefix",
        "rewrite",
        "preserve_host",
        "forward_authorization",
        "retry_unsafe_methods",
        "stream_uploads",
        "max_body_bytes",
        "policy",
        "tier",
        "tiers_by_role",
        "audit",
        *(field.key for field in ROUTE_EDGE_KEYS),
        *(field.key for field in ROUTE_REALTIME_KEYS),
    ),
)

KINDS = (SERVICES, POLICIES, TIERS, ROUTES)

API_KEY_KEYS = {
    "name": STR,
    "prefix": STR,
    "owner": STR,
    "expires_at": Spelling(
        "a date-time or null",
        lambda v: v is None or isinstance(v, str) or hasattr(v, "isoformat"),
        as_is,
        as_is,
    ),
    "revoked": BOOL,
}


# --- Rows -> plain data (every field, defaults included) ------------------------------------


def _put(data: dict[str, Any], key: str, value: Any) -> None:
    block, _, leaf = key.rpartition(".")
    (data.setdefault(block, {}) if block else data)[leaf] = value


def _get(data: dict[str, Any], key: str) -> tuple[bool, Any]:
    block, _, leaf = key.rpartition(".")
    holder = data.get(block) if block else data
    if not isinstance(holder, dict) or leaf not in holder:
        return False, None
    return True, holder[leaf]


def _fields_data(kind: Kind, obj: models.Model, name: str) -> dict[str, Any]:
    data: dict[str, Any] = {"name": name}
    for field in kind.fields:
        _put(data, field.key, field.spelling.to_doc(getattr(obj, field.attr)))
    return data


def _ordered(kind: Kind, data: dict[str, Any]) -> dict[str, Any]:
    return {key: data[key] for key in kind.order if key in data}


def target_data(target: Target) -> dict[str, Any]:
    return {"url": target.url, "weight": target.weight, "enabled": target.enabled}


def service_data(service: Service, targets: Iterable[Target]) -> dict[str, Any]:
    data = _fields_data(SERVICES, service, service.name)
    data["targets"] = sorted((target_data(t) for t in targets), key=lambda t: t["url"])
    return _ordered(SERVICES, data)


def policy_data(policy: RolePolicy, roles: Iterable[str]) -> dict[str, Any]:
    data = _fields_data(POLICIES, policy, policy.name)
    data["roles"] = sorted(roles)
    return _ordered(POLICIES, data)


def tier_data(tier: RateLimitTier) -> dict[str, Any]:
    return _ordered(TIERS, _fields_data(TIERS, tier, tier.name))


def route_data(
    route: Route,
    *,
    service: str,
    policy: str | None,
    tier: str | None,
    tiers_by_role: dict[str, str],
) -> dict[str, Any]:
    data = _fields_data(ROUTES, route, route.name)
    data.update(
        service=service, policy=policy, tier=tier, tiers_by_role=dict(sorted(tiers_by_role.items()))
    )
    return _ordered(ROUTES, data)


def compact(kind: Kind, data: dict[str, Any]) -> dict[str, Any]:
    """`data` without the fields at their default, empty blocks and empty relations: the
    export stays short, and a person sees only what was chosen."""
    out: dict[str, Any] = {}
    defaults = kind.defaults()
    blocks = kind.blocks()
    for key, value in data.items():
        if key in blocks and isinstance(value, dict):
            block = {leaf: v for leaf, v in value.items() if defaults.get(f"{key}.{leaf}") != v}
            if block:
                out[key] = block
        else:
            at_default = key in defaults and defaults[key] == value
            empty_relation = key in kind.relations and value in (None, [], {})
            if not (at_default or empty_relation):
                out[key] = value
    if kind is SERVICES and "targets" in out:
        target_defaults = {"weight": 100, "enabled": True}
        out["targets"] = [
            {k: v for k, v in t.items() if target_defaults.get(k, object()) != v}
            for t in out["targets"]
        ]
    return out


def flatten(data: dict[str, Any]) -> dict[str, Any]:
    """{"timeouts": {"connect": 2}} -> {"timeouts.connect": 2}: the diff names each field."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in {"timeouts", "health", "circuit_breaker"} and isinstance(value, dict):
            for leaf, v in value.items():
                flat[f"{key}.{leaf}"] = v
        elif key != "name":
            flat[key] = value
    return flat


# --- Plain data -> rows -------------------------------------------------------------------


def set_fields(kind: Kind, obj: models.Model, item: dict[str, Any]) -> None:
    """Every field of `obj` from `item`, a missing field taking the model's default: the
    document describes the whole object, as the export omits defaults."""
    for field in kind.fields:
        present, value = _get(item, field.key)
        if not present:
            value = field.default(kind.model)
        setattr(obj, field.attr, field.spelling.to_model(value))


def _spelling_errors(
    path: str, item: Any, spellings: dict[str, Spelling], required: Iterable[str]
) -> list[str]:
    """Type and key checks for one mapping whose keys may be dotted (one block level)."""
    if not isinstance(item, dict):
        return [f"{path}: expected a mapping"]
    errors: list[str] = []
    blocks = {key.partition(".")[0] for key in spellings if "." in key}
    for key, value in item.items():
        if key in blocks:
            if not isinstance(value, dict):
                errors.append(f"{path}.{key}: expected a mapping")
                continue
            for leaf, leaf_value in value.items():
                spelling = spellings.get(f"{key}.{leaf}")
                if spelling is None:
                    errors.append(f"{path}.{key}.{leaf}: unknown field")
                elif problem := spelling.problem(leaf_value):
                    errors.append(f"{path}.{key}.{leaf}: {problem}")
        elif key not in spellings:
            errors.append(f"{path}.{key}: unknown field")
        elif problem := spellings[key].problem(value):
            errors.append(f"{path}.{key}: {problem}")
    for key in required:
        if key not in item:
            errors.append(f"{path}.{key}: required")
    return errors


def kind_spellings(kind: Kind) -> dict[str, Spelling]:
    spellings = {"name": STR, **kind.relations}
    spellings.update({field.key: field.spelling for field in kind.fields})
    return spellings


def shape_errors(path: str, kind: Kind, item: Any) -> list[str]:
    """Unknown keys, wrong types and missing required keys of one object (and its targets)."""
    errors = _spelling_errors(path, item, kind_spellings(kind), kind.required)
    if kind is SERVICES and isinstance(item, dict) and isinstance(item.get("targets"), list):
        target_spellings = {field.key: field.spelling for field in TARGET_FIELDS}
        for index, target in enumerate(item["targets"]):
            errors += _spelling_errors(
                f"{path}.targets[{index}]", target, target_spellings, ["url"]
            )
    return errors


def api_key_errors(path: str, item: Any) -> list[str]:
    return _spelling_errors(path, item, API_KEY_KEYS, ("name", "prefix", "owner"))

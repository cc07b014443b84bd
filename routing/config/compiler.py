"""Turn plain snapshot data into the frozen, pre-compiled specs the proxy reads.

A spec's plain fields are copied from the entry's value of the same name, converted to the
field's type (a wrong type fails the entry); the rest are compiled here. A route that cannot be
compiled (data that bypassed the admin's validation) is skipped and reported; the rest of the
configuration is served.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar

from django.conf import settings

from routing.config.cache import compile_cache
from routing.config.composite import compile_composite
from routing.config.edge import compile_cors, compile_ip_rules, compile_security
from routing.config.spec import (
    EdgeSpec,
    HealthCheckSpec,
    PolicySpec,
    RouteSpec,
    ServiceSpec,
    Snapshot,
    TierSpec,
    WebSocketSpec,
    compile_target,
)
from routing.config.transforms import compile_transform

__all__ = ["snapshot_compile", "spec_from"]

logger = logging.getLogger("portier.snapshot")

Spec = TypeVar("Spec")
_MATCH_TYPES = frozenset({"prefix", "exact", "regex"})


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {value!r}")
    return value


# Plain field types, by their annotation (spec.py uses postponed annotations: these are strings).
_PLAIN: dict[str, Callable[[Any], Any]] = {"int": int, "float": float, "bool": bool, "str": _text}


def spec_from(cls: type[Spec], data: dict[str, Any], **compiled: Any) -> Spec:
    """`cls` from an entry: the compiled values given, and every plain field the entry has.

    A plain field the entry lacks, or holds as None (a nullable column left empty), takes the
    spec's default; a required one raises TypeError.
    """
    values = dict(compiled)
    for f in fields(cls):  # type: ignore[arg-type]
        convert = _PLAIN.get(f.type)  # type: ignore[arg-type]
        if convert is not None and f.name not in values and data.get(f.name) is not None:
            values[f.name] = convert(data[f.name])
    return cls(**values)


def snapshot_compile(data: dict[str, Any]) -> Snapshot:
    """The frozen snapshot of published data.

    Whatever is wrong with one entry, whatever the exception, only that entry is lost; a broken
    envelope (no routes list) fails the whole snapshot, and the holder keeps the one it has.
    """
    services: dict[int, ServiceSpec] = {}
    rows = {s.get("id"): s for s in data["services"] if isinstance(s, dict)}
    skipped: list[str] = []
    for position, s in enumerate(data["services"], start=1):
        try:
            services[s["id"]] = _compile_service(s)
        except Exception as exc:
            # Its routes are skipped too (their service is missing), and reported one by one.
            logger.error("service %s skipped from snapshot: %r", _entry_name(s, position), exc)
    defaults = data.get("defaults") or {}
    try:
        edge = _gateway_edge(defaults)
    except Exception as exc:
        # Validation keeps this from happening; served without them rather than not at all.
        logger.error("gateway-wide edge defaults skipped from snapshot: %r", exc)
        defaults, edge = {}, EdgeSpec(security=compile_security())
        skipped.append("gateway defaults")
    routes: list[RouteSpec] = []
    by_name = {s.name: s for s in services.values()}
    for position, r in enumerate(data["routes"], start=1):
        try:
            routes.append(_compile_route(r, services, rows, by_name, defaults, edge))
        except Exception as exc:
            skipped.append(_entry_name(r, position))
            logger.error("route %s skipped from snapshot: %r", skipped[-1], exc)
    # Highest priority first, then the longest path: the first match wins.
    routes.sort(key=lambda route: (-route.priority, -len(route.path), route.id))
    return Snapshot(
        version=int(data["version"]),
        token=data["token"],
        built_at=float(data["built_at"]),
        routes=tuple(routes),
        services={s.name: s for s in services.values()},
        skipped=tuple(skipped),
        edge=edge,
    )


def _entry_name(entry: Any, position: int) -> str:
    """An entry's name for reports; `#<position>` when it has none to give."""
    name = entry.get("name") if isinstance(entry, dict) else None
    return name if isinstance(name, str) and name else f"#{position}"


def _compile_service(s: dict[str, Any]) -> ServiceSpec:
    from routing.models import parse_statuses

    return spec_from(
        ServiceSpec,
        s,
        targets=tuple(compile_target(s["name"], t["url"], t["weight"]) for t in s["targets"]),
        timeout={
            "connect": float(s["connect_timeout"]),
            "read": float(s["read_timeout"]),
            "write": float(s["write_timeout"]),
            # aiohttp's "connect" timeout covers waiting for a pooled connection too, and would
            # blame a full pool on the target: the pool wait is bounded by total_timeout instead.
            "pool": None,
        },
        retry_statuses=frozenset(parse_statuses(s.get("retry_statuses", ""))),
        hash_header=s.get("hash_header", "").lower().encode("latin-1"),
        health=_health_check(s),
        breaker_statuses=frozenset(parse_statuses(s.get("breaker_statuses", ""))),
    )


def _health_check(s: dict[str, Any]) -> HealthCheckSpec | None:
    if not s.get("health_path"):
        return None
    return HealthCheckSpec(
        path=s["health_path"],
        interval=float(s["health_interval"]),
        timeout=float(s["health_timeout"]),
        healthy_threshold=int(s["healthy_threshold"]),
        unhealthy_threshold=int(s["unhealthy_threshold"]),
    )


def _compile_tier(data: dict[str, Any]) -> TierSpec:
    from django_ratelimit.core import _split_rate  # django-ratelimit's own rate grammar

    limit, period = _split_rate(data["rate"])
    return spec_from(TierSpec, data, limit=limit, period=period)


def _methods(names: list[str]) -> frozenset[str]:
    methods = {m.upper() for m in names}
    if "GET" in methods:  # HEAD is GET without the body (RFC 9110 9.3.2)
        methods.add("HEAD")
    return frozenset(methods)


def _gateway_edge(defaults: dict[str, Any]) -> EdgeSpec:
    return EdgeSpec(
        cors=compile_cors(defaults.get("cors")),
        security=compile_security(defaults.get("security_headers")),
        https_redirect=bool(defaults.get("https_redirect", False)),
        compression_min_bytes=_compression(defaults.get("compression", False), defaults),
    )


def _compression(on: Any, defaults: dict[str, Any]) -> int:
    """The smallest answer compressed, 0 for none (a Content-Length of 0 is never compressed)."""
    return max(1, int(defaults.get("compression_min_bytes", 1024))) if on else 0


def _route_edge(r: dict[str, Any], defaults: dict[str, Any], gateway: EdgeSpec) -> EdgeSpec:
    """A route's edge options, each its own where set, else the gateway-wide one."""
    cors = r.get("cors")
    security = r.get("security_headers")
    redirect, compression = r.get("https_redirect"), r.get("compression")
    return EdgeSpec(
        cors=gateway.cors if cors is None else compile_cors(cors, route=True),
        security=gateway.security
        if security is None
        else compile_security(defaults.get("security_headers"), security),
        https_redirect=gateway.https_redirect if redirect is None else bool(redirect),
        compression_min_bytes=gateway.compression_min_bytes
        if compression is None
        else _compression(compression, defaults),
        ip_rules=compile_ip_rules(r.get("ip_allow"), r.get("ip_deny")),
    )


def _compile_route(
    r: dict[str, Any],
    services: dict[int, ServiceSpec],
    service_rows: dict[int, dict[str, Any]],
    by_name: dict[str, ServiceSpec],
    defaults: dict[str, Any],
    gateway: EdgeSpec,
) -> RouteSpec:
    policy, tier = r.get("policy"), r.get("tier")
    path, match_type = r["path"], r["match_type"]
    # What Route.clean guarantees, checked again: an unknown match type would be served as a
    # prefix, and an empty or relative prefix would match every request.
    if match_type not in _MATCH_TYPES:
        raise ValueError(f"unknown match type {match_type!r}")
    if not isinstance(path, str) or (match_type != "regex" and not path.startswith("/")):
        raise ValueError(f"a {match_type} path must start with /, got {path!r}")
    return spec_from(
        RouteSpec,
        r,
        service=services[r["service_id"]],
        hosts=tuple(h.lower() for h in r["hosts"]),
        methods=_methods(r["methods"]),
        regex=re.compile(path) if match_type == "regex" else None,
        header_matches=tuple((k.lower(), v) for k, v in sorted(r["header_matches"].items())),
        policy=(
            spec_from(
                PolicySpec,
                policy,
                roles=tuple(policy["roles"]),
                # What RolePolicy.clean refuses, never served: admin routes are always enforced.
                report_only=bool(policy.get("report_only")) and policy["kind"] != "admin_only",
            )
            if policy
            else None
        ),
        tier=_compile_tier(tier) if tier else None,
        tier_overrides=tuple(
            (o["role"], _compile_tier(o["tier"])) for o in r.get("tier_overrides", ())
        ),
        edge=_route_edge(r, defaults, gateway),
        transform=compile_transform(r.get("transform"), settings.PORTIER_IDENTITY_HEADER_PREFIXES),
        cache=compile_cache(r.get("cache"), r, service_rows.get(r.get("service_id")) or {}),
        websocket=(
            WebSocketSpec(
                idle_timeout=float(r["websocket_idle_timeout"]),
                max_connections=int(r["websocket_max_connections"]),
            )
            if r.get("websocket")
            else None
        ),
        composite=compile_composite(r.get("backends"), by_name),
    )

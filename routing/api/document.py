"""The declarative document: the whole configuration as one YAML (or JSON) document.

`document_export()` reads it from the database, `document_dump()` writes it as YAML, and
`document_load()` reads YAML or JSON back; `document_apply()` (routing.api.document_apply)
validates and applies one. The document's shape is the public contract in docs/configuration.md;
`manage.py portier_export` / `portier_import` and `GET`/`PUT /admin/api/config` are its front ends.
"""

from __future__ import annotations

from typing import Any

import yaml

from accounts.models import ApiKey
from routing.api.document_apply import document_apply
from routing.api.document_defaults import defaults_export
from routing.api.document_plan import Changes
from routing.api.document_shape import (
    POLICIES,
    ROUTES,
    SERVICES,
    TIERS,
    DocumentInvalid,
    compact,
    policy_data,
    route_data,
    service_data,
    tier_data,
)
from routing.models import RateLimitTier, RolePolicy, Route, Service

__all__ = [
    "Changes",
    "DocumentInvalid",
    "document_apply",
    "document_dump",
    "document_export",
    "document_load",
]

HEADER = "# Portier configuration (docs/configuration.md). Apply with: manage.py portier_import\n"


def document_export(*, api_keys: bool = True) -> dict[str, Any]:
    """The whole configuration as plain data, each list sorted by name and each object's keys in
    a fixed order, fields at their default left out (and `defaults` when all of its are): the
    same database always gives the same document. API keys appear by name and prefix only,
    never a secret, and not at all with `api_keys=False` (a caller who may not view keys)."""
    services = [
        compact(SERVICES, service_data(s, s.targets.all()))
        for s in Service.objects.prefetch_related("targets").order_by("name")
    ]
    policies = [
        compact(POLICIES, policy_data(p, [g.name for g in p.roles.all()]))
        for p in RolePolicy.objects.prefetch_related("roles").order_by("name")
    ]
    tiers = [compact(TIERS, tier_data(t)) for t in RateLimitTier.objects.order_by("name")]
    routes = [
        compact(
            ROUTES,
            route_data(
                r,
                service=r.service.name,
                policy=r.role_policy.name if r.role_policy else None,
                tier=r.rate_limit_tier.name if r.rate_limit_tier else None,
                tiers_by_role={o.role.name: o.tier.name for o in r.tier_overrides.all()},
            ),
        )
        for r in Route.objects.select_related("service", "role_policy", "rate_limit_tier")
        .prefetch_related("tier_overrides__role", "tier_overrides__tier")
        .order_by("name")
    ]
    document: dict[str, Any] = {"version": 1}
    defaults = defaults_export()
    if defaults:  # a gateway never configured has none to show
        document["defaults"] = defaults
    document.update(services=services, policies=policies, tiers=tiers, routes=routes)
    keys = _api_keys() if api_keys else []
    if keys:
        document["api_keys"] = keys
    return document


def _api_keys() -> list[dict[str, Any]]:
    """Keys for review only: import neither creates nor changes them (their secrets are shown
    once, at creation, and only their hash is stored)."""
    keys = []
    for key in ApiKey.objects.select_related("owner").order_by("owner__username", "name", "prefix"):
        entry: dict[str, Any] = {
            "name": key.name,
            "prefix": key.prefix,
            "owner": key.owner.username,
        }
        if key.expires_at is not None:
            entry["expires_at"] = key.expires_at.isoformat()
        if key.revoked_at is not None:
            entry["revoked"] = True
        keys.append(entry)
    return keys


class _Dumper(yaml.SafeDumper):
    """Block style with list items indented under their key, as people write YAML."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_list(dumper: yaml.SafeDumper, items: list[Any]) -> yaml.Node:
    """Lists of plain values on one line (methods: [GET, POST]); lists of objects in blocks."""
    flat = all(isinstance(item, str | int | float | bool) for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flat)


_Dumper.add_representer(list, _represent_list)


def document_dump(document: dict[str, Any]) -> str:
    """YAML text, deterministic: the same data always gives the same bytes (keys in the data's
    order, no line folding)."""
    body = yaml.dump(
        document,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=2**16,
    )
    return HEADER + body


def document_load(text: str) -> dict[str, Any]:
    """YAML or JSON text (JSON is YAML) -> data; DocumentInvalid on a syntax error or a top
    level that is not a mapping."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DocumentInvalid([f"(document): {where}not valid YAML or JSON ({problem})"]) from exc
    if not isinstance(data, dict):
        raise DocumentInvalid(["(document): expected a mapping with version: 1 at the top level"])
    return data

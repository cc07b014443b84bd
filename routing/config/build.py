"""Read the enabled configuration from the database into plain, JSON-ready data.

Each row goes in whole (its stored fields by attribute name, a foreign key as `<name>_id`), so a
new model field reaches the compiler without being listed here; only what is not a column of
its own row is spelled out: targets, a route's policy, tier and role overrides.
"""

from __future__ import annotations

import time
from typing import Any

from django.db import models

__all__ = ["snapshot_build"]


def snapshot_build(version: int, token: str = "") -> dict[str, Any]:
    """Read every enabled route with its service, targets, policy and tier, and the gateway-wide
    defaults, into plain data."""
    from routing.models import GatewayDefaults, Route, Service

    services = [
        {
            **_row(s),
            "targets": [{"url": t.url, "weight": t.weight} for t in s.targets.all() if t.enabled],
        }
        for s in Service.objects.filter(enabled=True).prefetch_related("targets")
    ]
    enabled_routes = (
        Route.objects.filter(enabled=True, service__enabled=True)
        .select_related("role_policy", "rate_limit_tier")
        .prefetch_related("role_policy__roles", "tier_overrides__role", "tier_overrides__tier")
    )
    routes = []
    for r in enabled_routes:
        policy = r.role_policy
        tier = r.rate_limit_tier
        routes.append(
            {
                **_row(r),
                "hosts": r.host_list(),
                "methods": r.method_list(),
                "header_matches": r.header_matches or {},
                "policy": policy
                and {**_row(policy), "roles": sorted(g.name for g in policy.roles.all())},
                "tier": tier and _row(tier),
                "tier_overrides": [
                    {"role": o.role.name, "tier": _row(o.tier)} for o in r.tier_overrides.all()
                ],
            }
        )
    return {
        "version": version,
        "token": token,
        "built_at": time.time(),
        "defaults": _row(GatewayDefaults.current()),
        "services": services,
        "routes": routes,
    }


def _row(obj: models.Model) -> dict[str, Any]:
    """A row's stored values by attribute name; timestamps stay behind (no part of a config)."""
    return {
        f.attname: f.value_from_object(obj)
        for f in obj._meta.concrete_fields
        if not isinstance(f, models.DateTimeField)
    }

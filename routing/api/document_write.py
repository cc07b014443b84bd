"""Write a validated plan (routing.api.document_plan): the gateway defaults, tiers, policies,
services with their targets, routes with their tier overrides, then the removals, routes first
(a service, policy or tier is protected while a route uses it). Every save and delete names the
acting user for the configuration history (django-simple-history reads `_history_user`)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group
from django.db import models

from routing.api.document_plan import Plan
from routing.models import RateLimitTier, RolePolicy, Route, RouteTierOverride, Service, Target

__all__ = ["plan_write"]


def _save(obj: models.Model, actor: Any) -> None:
    obj._history_user = actor  # type: ignore[attr-defined]  # read by simple_history
    obj.save()


def _delete(obj: models.Model, actor: Any) -> None:
    obj._history_user = actor  # type: ignore[attr-defined]
    obj.delete()


def plan_write(plan: Plan, actor: Any) -> None:
    if plan.defaults is not None and plan.defaults.saves_row():
        _save(plan.defaults.instance, actor)
    existing_roles = {g.name: g for g in Group.objects.filter(name__in=plan.roles)}
    groups = {
        name: existing_roles.get(name) or Group.objects.create(name=name) for name in plan.roles
    }
    tiers = {t.name: t for t in RateLimitTier.objects.all()}
    for item in plan.objects["tiers"]:
        if item.saves_row():
            _save(item.instance, actor)
        tiers[item.name] = item.instance  # type: ignore[assignment]
    policies = {p.name: p for p in RolePolicy.objects.all()}
    for item in plan.objects["policies"]:
        policy = item.instance
        if item.saves_row():
            _save(policy, actor)
        if item.current is None or "roles" in item.changed_fields():
            policy._history_user = actor  # type: ignore[attr-defined]
            policy.roles.set([groups[name] for name in item.related])  # type: ignore[attr-defined]
        policies[item.name] = policy  # type: ignore[assignment]
    services = {s.name: s for s in Service.objects.all()}
    for item in plan.objects["services"]:
        if item.saves_row():
            _save(item.instance, actor)
        services[item.name] = item.instance  # type: ignore[assignment]
        if item.current is None or "targets" in item.changed_fields():
            _sync_targets(item.instance, item.related, actor)  # type: ignore[arg-type]
    for item in plan.objects["routes"]:
        route: Route = item.instance  # type: ignore[assignment]
        refs = item.related
        route.service = services[refs["service"]]
        route.role_policy = policies[refs["policy"]] if refs["policy"] else None
        route.rate_limit_tier = tiers[refs["tier"]] if refs["tier"] else None
        if item.saves_row():
            _save(route, actor)
        if item.current is None or "tiers_by_role" in item.changed_fields():
            _sync_overrides(route, refs["tiers_by_role"], groups, tiers, actor)
    for section in ("routes", "services", "policies", "tiers"):
        for row in plan.removals[section]:
            _delete(row, actor)


def _sync_targets(service: Service, targets: tuple[list[Target], list[Target]], actor: Any) -> None:
    wanted, dirty = targets
    urls = {t.url for t in wanted}
    for row in service.targets.all():
        if row.url not in urls:
            _delete(row, actor)
    for target in dirty:
        target.service = service
        _save(target, actor)


def _sync_overrides(
    route: Route,
    tiers_by_role: dict[str, str],
    groups: dict[str, Group],
    tiers: dict[str, RateLimitTier],
    actor: Any,
) -> None:
    rows = {o.role.name: o for o in route.tier_overrides.select_related("role", "tier")}
    for role, row in rows.items():
        if role not in tiers_by_role:
            _delete(row, actor)
    for role, tier_name in tiers_by_role.items():
        row = rows.get(role) or RouteTierOverride(route=route, role=groups[role])
        if row.pk is None or row.tier.name != tier_name:
            row.tier = tiers[tier_name]
            _save(row, actor)

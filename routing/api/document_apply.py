"""Apply a declarative document: validate all of it, diff it against the database, then write
the differences in one transaction.

Validation is the admin's: every object goes through the model's `full_clean()`, plus the rules
the admin's forms add (roles for any-of/all-of policies, an upstream for enabled services), with
each error mapped to the document path of the bad field. Nothing is written unless the whole
document is valid, and nothing is saved when nothing differs, so importing an export publishes no
version (routing.signals publishes once per committed transaction that saved something).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import Group
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models, transaction

from routing.api.document_defaults import SECTION as DEFAULTS_SECTION
from routing.api.document_defaults import defaults_plan, defaults_shape_errors
from routing.api.document_plan import Changes, Context, Plan, Planned
from routing.api.document_shape import (
    KINDS,
    POLICIES,
    ROUTES,
    SERVICES,
    TARGET_FIELDS,
    TIERS,
    DocumentInvalid,
    Kind,
    api_key_errors,
    flatten,
    policy_data,
    route_data,
    service_data,
    set_fields,
    shape_errors,
    target_data,
    tier_data,
)
from routing.api.document_write import plan_write
from routing.api.revisions import attributed
from routing.models import (
    ConfigRevision,
    ConfigVersion,
    RateLimitTier,
    RolePolicy,
    Route,
    Service,
    Target,
)
from routing.rules import (
    policy_roles_problem,
    route_backends_problem,
    route_service_problem,
    service_upstream_problem,
)

__all__ = ["document_apply"]

TOP_LEVEL = {"version", DEFAULTS_SECTION, "api_keys", *(kind.section for kind in KINDS)}


def document_apply(
    document: dict[str, Any],
    *,
    prune: bool = False,
    dry_run: bool = False,
    actor: Any = None,
    comment: str = "",
) -> Changes:
    """Validate `document` whole (DocumentInvalid lists every error; nothing changes), then,
    unless `dry_run`, write its differences in one transaction: one configuration version is
    published, or none when nothing differs. `prune` removes what the document lacks; `actor`
    is recorded as the user of every history record and as the author of the version in the
    configuration timeline (an import, unless the caller names it otherwise), with `comment`."""
    with attributed(actor, ConfigRevision.Source.IMPORT, comment), transaction.atomic():
        if not dry_run:
            # Two imports at once are serialised (PostgreSQL), so neither plans against rows
            # the other is about to change.
            ConfigVersion.objects.get_or_create(pk=1)
            ConfigVersion.objects.select_for_update().filter(pk=1).exists()
        plan = _plan(document, prune=prune)
        if not dry_run and not plan.changes.is_empty():
            plan_write(plan, actor)
    return plan.changes


# --- Planning: validate and diff -----------------------------------------------------------


def _plan(document: Any, *, prune: bool) -> Plan:
    # A document whose top level cannot be read is refused before anything else is looked at.
    errors = _top_level_errors(document)
    if errors:
        raise DocumentInvalid(errors)
    items = {kind.section: document.get(kind.section) or [] for kind in KINDS}
    # Objects of the wrong shape are reported and skipped; the rest are still checked, so one
    # run lists every error.
    errors, well_formed = _shape_errors(document)
    existing = {
        "services": {s.name: s for s in Service.objects.prefetch_related("targets")},
        "policies": {p.name: p for p in RolePolicy.objects.prefetch_related("roles")},
        "tiers": {t.name: t for t in RateLimitTier.objects.all()},
        "routes": {
            r.name: r
            for r in Route.objects.select_related(
                "service", "role_policy", "rate_limit_tier"
            ).prefetch_related("tier_overrides__role", "tier_overrides__tier")
        },
    }
    in_document = {
        kind.section: {
            item["name"]
            for item in items[kind.section]
            if isinstance(item, dict) and isinstance(item.get("name"), str)
        }
        for kind in KINDS
    }
    known = {
        section: names | (set() if prune else set(existing[section]))
        for section, names in in_document.items()
    }
    context = Context(known, existing, in_document)
    planned: dict[str, list[Planned]] = {}
    for kind, plan_one in (
        (TIERS, _plan_tier),
        (POLICIES, _plan_policy),
        (SERVICES, _plan_service),
        (ROUTES, _plan_route),
    ):
        planned[kind.section] = []
        for index, item in enumerate(items[kind.section]):
            if (kind.section, index) not in well_formed:
                continue
            path = f"{kind.section}[{index}]"
            row = existing[kind.section].get(item["name"])
            result = plan_one(path, item, row, context, errors)
            if result is not None:
                planned[kind.section].append(result)
    defaults = None
    if (DEFAULTS_SECTION, 0) in well_formed:
        defaults, defaults_errors = defaults_plan(document, prune=prune)
        errors += defaults_errors
    if errors:
        raise DocumentInvalid(errors)

    removals = {
        kind.section: (
            [
                row
                for name, row in sorted(existing[kind.section].items())
                if name not in in_document[kind.section]
            ]
            if prune
            else []
        )
        for kind in KINDS
    }
    roles = {role for p in planned["policies"] for role in p.related}
    roles |= {role for p in planned["routes"] for role in p.related["tiers_by_role"]}
    return Plan(planned, removals, _changes(planned, removals, defaults), roles, defaults)


def _top_level_errors(document: Any) -> list[str]:
    """The document's frame: a mapping, version 1, known sections, each a list."""
    if not isinstance(document, dict):
        return ["(document): expected a mapping with version: 1"]
    errors = [f"{key}: unknown field" for key in document if key not in TOP_LEVEL]
    if "version" not in document:
        errors.append("version: required (write version: 1)")
    elif document["version"] != 1 or isinstance(document["version"], bool):
        errors.append(f"version: unsupported version {document['version']!r}; expected 1")
    for section in (*(kind.section for kind in KINDS), "api_keys"):
        if document.get(section) is not None and not isinstance(document[section], list):
            errors.append(f"{section}: expected a list")
    defaults = document.get(DEFAULTS_SECTION)
    if defaults is not None and not isinstance(defaults, dict):
        errors.append(f"{DEFAULTS_SECTION}: expected a mapping")
    return errors


def _shape_errors(document: dict[str, Any]) -> tuple[list[str], set[tuple[str, int]]]:
    """Types, unknown keys, required keys and duplicate names of every object; answers the
    errors and the (section, index) of the objects without any ("defaults", 0 for the
    defaults)."""
    errors: list[str] = []
    well_formed: set[tuple[str, int]] = set()
    for kind in KINDS:
        seen: dict[str, int] = {}
        for index, item in enumerate(document.get(kind.section) or []):
            path = f"{kind.section}[{index}]"
            item_errors = shape_errors(path, kind, item)
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str):
                if name in seen:
                    item_errors.append(
                        f"{path}.name: duplicate name {name!r} (also {kind.section}[{seen[name]}])"
                    )
                seen.setdefault(name, index)
            errors += item_errors
            if not item_errors:
                well_formed.add((kind.section, index))
    for index, item in enumerate(document.get("api_keys") or []):
        errors += api_key_errors(f"api_keys[{index}]", item)
    defaults_errors = defaults_shape_errors(document)
    errors += defaults_errors
    if not defaults_errors:
        well_formed.add((DEFAULTS_SECTION, 0))
    return errors, well_formed


def _clean(kind: Kind, path: str, obj: models.Model, exclude: Iterable[str] = ()) -> list[str]:
    """The model's own validation (the admin's), each message under the document path."""
    try:
        obj.full_clean(exclude=list(exclude), validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        return [
            f"{path}: {message}"
            if attr == NON_FIELD_ERRORS
            else f"{path}.{kind.field_key(attr)}: {message}"
            for attr, messages in exc.message_dict.items()
            for message in messages
        ]
    return []


def _plan_tier(
    path: str, item: dict[str, Any], row: Any, context: Context, errors: list[str]
) -> Planned | None:
    tier = row or RateLimitTier(name=item["name"])
    current = tier_data(row) if row else None
    set_fields(TIERS, tier, item)
    new_errors = _clean(TIERS, path, tier)
    errors += new_errors
    return None if new_errors else Planned(TIERS, tier.name, tier, tier_data(tier), current)


def _plan_policy(
    path: str, item: dict[str, Any], row: Any, context: Context, errors: list[str]
) -> Planned | None:
    policy = row or RolePolicy(name=item["name"])
    current = policy_data(row, [g.name for g in row.roles.all()]) if row else None
    set_fields(POLICIES, policy, item)
    roles = sorted(set(item.get("roles") or []))
    new_errors = _clean(POLICIES, path, policy)
    problem = policy_roles_problem(policy.kind, roles)
    if problem:
        new_errors.append(f"{path}.roles: {problem}")
    max_length = Group._meta.get_field("name").max_length or 150
    for index, role in enumerate(item.get("roles") or []):
        if not role.strip() or len(role) > max_length:
            new_errors.append(f"{path}.roles[{index}]: a role name of 1 to {max_length} characters")
    errors += new_errors
    if new_errors:
        return None
    return Planned(POLICIES, policy.name, policy, policy_data(policy, roles), current, roles)


def _plan_service(
    path: str, item: dict[str, Any], row: Any, context: Context, errors: list[str]
) -> Planned | None:
    service = row or Service(name=item["name"])
    current = service_data(row, row.targets.all()) if row else None
    set_fields(SERVICES, service, item)
    new_errors = _clean(SERVICES, path, service)
    rows = {t.url: t for t in row.targets.all()} if row else {}
    targets: list[Target] = []
    dirty: list[Target] = []  # new or changed targets: the only ones saved
    seen: set[str] = set()
    for index, spec in enumerate(item.get("targets") or []):
        target_path = f"{path}.targets[{index}]"
        if spec["url"] in seen:
            new_errors.append(f"{target_path}.url: duplicate target URL {spec['url']!r}")
            continue
        seen.add(spec["url"])
        target = rows.get(spec["url"]) or Target(url=spec["url"])
        before = target_data(target) if target.pk else None
        for target_field in TARGET_FIELDS:
            value = spec.get(target_field.key, target_field.default(Target))
            setattr(target, target_field.attr, value)
        try:
            target.full_clean(
                exclude=["service"], validate_unique=False, validate_constraints=False
            )
        except ValidationError as exc:
            new_errors += [
                f"{target_path}{'' if attr == NON_FIELD_ERRORS else '.' + attr}: {message}"
                for attr, messages in exc.message_dict.items()
                for message in messages
            ]
        targets.append(target)
        if before != target_data(target):
            dirty.append(target)
    problem = service_upstream_problem(
        enabled=service.enabled,
        allow_registration=service.allow_registration,
        has_enabled_target=any(t.enabled for t in targets),
    )
    if problem:
        new_errors.append(f"{path}.targets: {problem}")
    errors += new_errors
    if new_errors:
        return None
    desired = service_data(service, targets)
    return Planned(SERVICES, service.name, service, desired, current, (targets, dirty))


def _plan_route(
    path: str, item: dict[str, Any], row: Any, context: Context, errors: list[str]
) -> Planned | None:
    route = row or Route(name=item["name"])
    current = _route_row_data(row) if row else None
    set_fields(ROUTES, route, item)
    new_errors = _clean(ROUTES, path, route, exclude=("service", "role_policy", "rate_limit_tier"))
    refs = {
        "service": item["service"],
        "policy": item.get("policy"),
        "tier": item.get("tier"),
        "tiers_by_role": dict(sorted((item.get("tiers_by_role") or {}).items())),
    }
    for key, section in (("service", "services"), ("policy", "policies"), ("tier", "tiers")):
        name = refs[key]
        if name is not None and name not in context.known[section]:
            new_errors.append(f"{path}.{key}: {_unknown(key, name, section, context)}")
    for role, tier_name in refs["tiers_by_role"].items():
        if not role.strip():
            new_errors.append(f"{path}.tiers_by_role: a role name cannot be empty")
        elif tier_name not in context.known["tiers"]:
            new_errors.append(
                f"{path}.tiers_by_role.{role}: {_unknown('tier', tier_name, 'tiers', context)}"
            )
    problem = route_backends_problem(route.backends, context.known["services"])
    if problem:
        new_errors.append(f"{path}.backends: {problem}")
    service_row = context.existing["services"].get(refs["service"])
    # For a service the document leaves as it is; a service in the document is held to the
    # same rule by its own check.
    if service_row is not None and refs["service"] not in context.in_document["services"]:
        problem = route_service_problem(route_enabled=route.enabled, service=service_row)
        if problem:
            new_errors.append(f"{path}.service: {problem}")
    errors += new_errors
    if new_errors:
        return None
    desired = route_data(
        route,
        service=refs["service"],
        policy=refs["policy"],
        tier=refs["tier"],
        tiers_by_role=refs["tiers_by_role"],
    )
    return Planned(ROUTES, route.name, route, desired, current, refs)


def _unknown(what: str, name: str, section: str, context: Context) -> str:
    if name in context.existing[section]:
        return f"{what} {name!r} is not in the document, and prune removes it"
    return f"unknown {what} {name!r}: no such {what} in the document or the database"


def _route_row_data(route: Route) -> dict[str, Any]:
    return route_data(
        route,
        service=route.service.name,
        policy=route.role_policy.name if route.role_policy else None,
        tier=route.rate_limit_tier.name if route.rate_limit_tier else None,
        tiers_by_role={o.role.name: o.tier.name for o in route.tier_overrides.all()},
    )


def _changes(
    planned: dict[str, list[Planned]], removals: dict[str, list[Any]], defaults: Planned | None
) -> Changes:
    changes = Changes()
    if defaults is not None and defaults.current is not None:
        old, new = flatten(defaults.current), flatten(defaults.desired)
        for key in defaults.changed_fields():
            changes.changed.append((DEFAULTS_SECTION, key, old.get(key), new[key]))
    for kind in KINDS:
        for item in sorted(planned[kind.section], key=lambda p: p.name):
            label = f"{kind.section}/{item.name}"
            if item.current is None:
                changes.added.append(label)
                continue
            old, new = flatten(item.current), flatten(item.desired)
            for key in item.changed_fields():
                changes.changed.append((label, key, old.get(key), new[key]))
    # Routes go first: they hold the protected references to everything else.
    for section in ("routes", "services", "policies", "tiers"):
        changes.removed += [f"{section}/{row.name}" for row in removals[section]]
    return changes

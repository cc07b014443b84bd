"""Configuration rules that span several objects, which no single model's clean() can see (a
service and its targets, a route and its service, a policy and its roles). The admin's forms,
the management API and the declarative document apply these same functions, so the three views
refuse the same configurations with the same words."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

__all__ = [
    "NO_UPSTREAM",
    "policy_roles_problem",
    "route_backends_problem",
    "route_service_problem",
    "service_upstream_problem",
]

NO_UPSTREAM = (
    "An enabled service needs at least one enabled target, or “Allow registration” on: without "
    "either, every request to its routes gets 503. Add or enable a target, allow registration, "
    "or disable the service."
)
ROLES_NEEDED = "Choose at least one role for this kind of policy."
ROLES_UNUSED = "This kind of policy does not use roles; clear them."


def service_upstream_problem(
    *, enabled: bool, allow_registration: bool, has_enabled_target: bool
) -> str | None:
    """Why a service as it would be saved cannot serve (None when it can, or is disabled)."""
    if enabled and not allow_registration and not has_enabled_target:
        return NO_UPSTREAM
    return None


def route_service_problem(*, route_enabled: bool, service: Any) -> str | None:
    """Why an enabled route cannot be served by its service as saved (None when it can)."""
    if route_enabled and service.enabled and not service.has_upstream():
        return (
            f"Service “{service}” has no enabled target and does not allow registration: every "
            "request to this route would get 503. Add a target to the service first, or save "
            "the route disabled."
        )
    return None


def route_backends_problem(
    backends: Any, known_services: Collection[str] | None = None
) -> str | None:
    """Which services a composite route's backends name that do not exist (None when all do,
    or the route is an ordinary one). `known_services`: the names that exist (the document's
    view); None looks them up in the database."""
    from routing.config.composite import backend_services

    names = backend_services(backends)
    if not names:
        return None
    if known_services is None:
        from routing.models import Service

        known_services = set(Service.objects.filter(name__in=names).values_list("name", flat=True))
    missing = [name for name in names if name not in known_services]
    if not missing:
        return None
    names = ", ".join(f"“{name}”" for name in missing)
    return (
        f"No service named {names}: each backend calls a service of the gateway. Create it "
        "first, or correct the name."
    )


def policy_roles_problem(kind: str, roles: Collection[Any]) -> str | None:
    """Why a policy's roles do not fit its kind: any_of/all_of need roles, public and
    authenticated take none (None when they fit)."""
    from routing.models import RolePolicy

    if kind in {RolePolicy.Kind.ANY_OF, RolePolicy.Kind.ALL_OF} and not roles:
        return ROLES_NEEDED
    if kind in {RolePolicy.Kind.PUBLIC, RolePolicy.Kind.AUTHENTICATED} and roles:
        return ROLES_UNUSED
    return None

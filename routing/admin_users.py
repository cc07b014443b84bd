""" "Reachable routes" on a user's page in the admin: the routes this gateway process serves whose
role policy lets the user through, decided by the authorize stage's own `policy_refusal` on the
identity the user's token would carry (their groups as roles), so the page and the gateway cannot
disagree.

Accounts imports no app above it, so this section is added to its user page through
`accounts.admin.user_page_sections`; shown to staff who may view routes.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.http import HttpRequest

from accounts.admin import UserSection, user_page_sections
from accounts.models import User
from routing import dataplane
from routing.config.holder import holder
from routing.config.spec import RouteSpec
from routing.proxy.context import Identity
from routing.proxy.stages.access import policy_refusal

__all__ = ["ReachableRoute", "reachable_routes", "reachable_routes_section"]


@dataclass(frozen=True, slots=True)
class ReachableRoute:
    """A route the user can call, as the section lists it."""

    id: int
    name: str
    methods: str
    match: str
    hosts: str
    policy: str  # the policy's name and kind, or "none (public)"
    report_only: bool  # the policy would refuse the user, but only reports it


def _identity(user: User) -> Identity | None:
    """What the gateway would know of the user from one of their tokens or API keys; None for an
    inactive user, whose every credential the gateway refuses (accounts.denylist)."""
    if not user.is_active:
        return None
    roles = sorted(user.groups.values_list("name", flat=True))
    return Identity(
        subject=str(user.pk),
        email=user.email,
        roles=frozenset(roles),
        primary_role=roles[0] if roles else "",
        method="jwt",
    )


def _listed(route: RouteSpec, report_only: bool) -> ReachableRoute:
    policy = route.policy
    return ReachableRoute(
        id=route.id,
        name=route.name,
        methods=", ".join(sorted(route.methods)) or "any",
        match=f"{route.match_type} {route.path}",
        hosts=", ".join(route.hosts) or "any",
        policy=f"{policy.name} ({policy.kind.replace('_', ' ')})" if policy else "none (public)",
        report_only=report_only,
    )


def reachable_routes(user: User) -> list[ReachableRoute]:
    """The served routes the user may call now, by name."""
    dataplane.start()  # the snapshot, as the service page reads it
    identity = _identity(user)
    found = []
    for route in sorted(holder.current.routes, key=lambda r: r.name):
        policy = route.policy
        if policy is None or policy_refusal(policy, identity) is None:
            found.append(_listed(route, report_only=False))
        elif policy.report_only:  # the gateway lets the user through, and reports it
            found.append(_listed(route, report_only=True))
    return found


def reachable_routes_section(request: HttpRequest, user: User) -> UserSection | None:
    if not request.user.has_perm("routing.view_route"):
        return None
    return UserSection(
        id="reachable-routes",
        title="Reachable routes",
        template="admin/routing/user_reachable_routes.html",
        context={"routes": reachable_routes(user), "active": user.is_active},
    )


user_page_sections.append(reachable_routes_section)

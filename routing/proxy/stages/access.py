"""Authorize: the route's role policy against the caller's identity.

A route without a policy is public. Roles are Django group names (in tokens: the roles claim).
"""

from __future__ import annotations

from django.conf import settings

from routing.proxy.context import GatewayError, RequestContext

__all__ = ["authorize"]


async def authorize(ctx: RequestContext) -> None:
    policy = ctx.route.policy if ctx.route else None
    if policy is None or policy.kind == "public":
        return
    identity = ctx.identity
    if identity is None:
        raise GatewayError(
            401,
            "missing_credentials",
            "This route needs credentials.",
            [(b"www-authenticate", b'Bearer realm="portier"')],
        )
    roles = identity.roles
    allowed = (
        policy.kind == "authenticated"
        or (policy.kind == "any_of" and not roles.isdisjoint(policy.roles))
        or (policy.kind == "all_of" and roles.issuperset(policy.roles))
        or (policy.kind == "admin_only" and settings.PORTIER_ADMIN_ROLE in roles)
    )
    if not allowed:
        raise GatewayError(403, "forbidden", "The caller may not use this route.")

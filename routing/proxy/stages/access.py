"""Authorize: the route's role policy against the caller's identity.

A route without a policy is public. Roles are Django group names (in tokens: the roles claim).

A policy in report-only mode decides the same way but does not enforce: a request it would
refuse goes on (with the identity it has, or none) and `ctx.would_deny` says "policy", so the
record stage counts and logs whom the policy would block before it is switched on.
"""

from __future__ import annotations

from routing.config.spec import PolicySpec
from routing.hot_settings import hot_settings
from routing.proxy.context import GatewayError, Identity, RequestContext

__all__ = ["authorize", "policy_refusal"]


async def authorize(ctx: RequestContext) -> None:
    policy = ctx.route.policy if ctx.route else None
    if policy is None:
        return
    refusal = policy_refusal(policy, ctx.identity)
    if refusal is None:
        return
    if policy.report_only:
        ctx.would_deny = "policy"
        return
    raise refusal


def policy_refusal(policy: PolicySpec, identity: Identity | None) -> GatewayError | None:
    """The error the policy answers this caller with, or None when the caller may pass."""
    if policy.kind == "public":
        return None
    if identity is None:
        return GatewayError(
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
        or (policy.kind == "admin_only" and hot_settings.PORTIER_ADMIN_ROLE in roles)
    )
    if allowed:
        return None
    return GatewayError(403, "forbidden", "The caller may not use this route.")

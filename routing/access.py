"""Stages 2-3, authenticate and authorize, as far as they exist today.

Until the identity stage lands (JWT, API keys), only routes without a role policy or with a public
one are reachable; every other policy fails closed with 401, never open.
"""

from __future__ import annotations

from routing.context import GatewayError, RequestContext

__all__ = ["authorize"]


async def authorize(ctx: RequestContext) -> None:
    policy = ctx.route.policy if ctx.route else None
    if policy is None or policy.kind == "public":
        return
    raise GatewayError(
        401,
        "missing_credentials",
        "This route needs credentials.",
        [(b"www-authenticate", b'Bearer realm="portier"')],
    )

"""Who calls the management API: an admin's JWT or API key (the gateway's own rules), or the
admin's browser session for the docs page. Every caller becomes the Django user, so Django's
model permissions decide what they may do, and configuration history names them."""

from __future__ import annotations

import jwt
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from accounts.models import User
from accounts.serializers import PORTIER_CLAIM
from routing.proxy.context import Identity
from routing.upstream.registry_api import GatewayAuthentication

__all__ = ["AdminSessionAuthentication", "UserCredentialsAuthentication"]


class UserCredentialsAuthentication(GatewayAuthentication):
    """A Bearer JWT or an X-API-Key checked exactly as on proxied routes, then mapped to the
    active Django user it names: a token of an unknown or deactivated user opens nothing.

    A JWT counts only when Portier minted it (its `portier` claim, set by /auth/token): the
    proxy also trusts an external auth service's tokens, whose user ids are not Portier's."""

    def authenticate(self, request: Request) -> tuple[User, Identity] | None:
        found = super().authenticate(request)
        if found is None:
            return None
        identity = found[1]
        if identity.method == "jwt" and not _minted_by_portier(request):
            raise AuthenticationFailed(
                "This token was not issued by Portier; use a Portier token or an API key.",
                code="invalid_credentials",
            )
        user = None
        subject = identity.subject
        if subject.isascii() and subject.isdigit() and len(subject) <= 18:
            user = User.objects.filter(pk=int(subject), is_active=True).first()
        if user is None:
            raise AuthenticationFailed(
                "The credentials do not belong to an active user.", code="invalid_credentials"
            )
        return user, identity


def _minted_by_portier(request: Request) -> bool:
    """The Bearer token's claims (its signature was just verified by the gateway's rules)."""
    scheme, _, token = request._request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    try:
        claims = jwt.decode(token.strip(), options={"verify_signature": False})
    except jwt.PyJWTError:
        return False
    marker = claims.get(PORTIER_CLAIM) if isinstance(claims, dict) else None
    return type(marker) is int and marker == 1


class AdminSessionAuthentication(SessionAuthentication):
    """The admin's session cookie (the docs page in a browser); DRF enforces CSRF on unsafe
    methods. Its 401 still names the Bearer scheme, which scripts use."""

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="portier"'

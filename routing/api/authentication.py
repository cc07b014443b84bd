"""Who calls the management API: an admin's JWT or API key (the gateway's own rules), or the
admin's browser session for the docs page. Every caller becomes the Django user, so Django's
model permissions decide what they may do, and configuration history names them."""

from __future__ import annotations

from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from accounts.models import User
from routing.proxy.context import Identity
from routing.upstream.registry_api import GatewayAuthentication

__all__ = ["AdminSessionAuthentication", "UserCredentialsAuthentication"]


class UserCredentialsAuthentication(GatewayAuthentication):
    """A Bearer JWT or an X-API-Key checked exactly as on proxied routes, then mapped to the
    active Django user it names: a token of an unknown or deactivated user opens nothing."""

    def authenticate(self, request: Request) -> tuple[User, Identity] | None:
        found = super().authenticate(request)
        if found is None:
            return None
        identity = found[1]
        user = None
        if identity.subject.isdigit():
            user = User.objects.filter(pk=int(identity.subject), is_active=True).first()
        if user is None:
            raise AuthenticationFailed(
                "The credentials do not belong to an active user.", code="invalid_credentials"
            )
        return user, identity


class AdminSessionAuthentication(SessionAuthentication):
    """The admin's session cookie (the docs page in a browser); DRF enforces CSRF on unsafe
    methods. Its 401 still names the Bearer scheme, which scripts use."""

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="portier"'

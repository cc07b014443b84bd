"""Token serializers: login by username or email, and access tokens that carry email and roles."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.models import User

__all__ = ["PORTIER_CLAIM", "PortierTokenObtainSerializer", "access_token_for", "portier_claims"]

# Marks a token Portier minted itself ("portier": 1). The proxy also trusts tokens from a separate
# auth service (shared secret or JWKS), whose user ids mean nothing here: the management API
# maps a JWT to a Portier user only when it carries this claim.
PORTIER_CLAIM = "portier"


def portier_claims(user: User) -> dict[str, Any]:
    """The claims Portier adds to a user's tokens: email, roles (group names) and its mark."""
    return {
        settings.PORTIER_JWT_EMAIL_CLAIM: user.email,
        settings.PORTIER_JWT_ROLES_CLAIM: sorted(user.groups.values_list("name", flat=True)),
        PORTIER_CLAIM: 1,
    }


def access_token_for(user: User) -> str:
    """An access token for `user` as /auth/token would issue it, without a refresh token (none
    is recorded as outstanding): the route tester's "test as user" (routing.api.tester_view)."""
    token = AccessToken.for_user(user)
    for claim, value in portier_claims(user).items():
        token[claim] = value
    return str(token)


class PortierTokenObtainSerializer(TokenObtainPairSerializer):
    """Obtain a token pair; the claims are copied into every access token the pair produces."""

    @classmethod
    def get_token(cls, user: User) -> RefreshToken:  # type: ignore[override]
        token = super().get_token(user)
        for claim, value in portier_claims(user).items():
            token[claim] = value
        return token  # type: ignore[return-value]

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        login = attrs.get(self.username_field, "")
        if "@" in login:
            user = User.objects.filter(email__iexact=login).first()
            if user is not None:
                attrs[self.username_field] = user.get_username()
        return super().validate(attrs)

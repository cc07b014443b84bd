"""Token serializers: login by username or email, and access tokens that carry email and roles."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import User

__all__ = ["PORTIER_CLAIM", "PortierTokenObtainSerializer"]

# Marks a token Portier minted itself ("portier": 1). The proxy also trusts tokens from a separate
# auth service (shared secret or JWKS), whose user ids mean nothing here: the management API
# maps a JWT to a Portier user only when it carries this claim.
PORTIER_CLAIM = "portier"


class PortierTokenObtainSerializer(TokenObtainPairSerializer):
    """Obtain a token pair; the claims are copied into every access token the pair produces."""

    @classmethod
    def get_token(cls, user: User) -> RefreshToken:  # type: ignore[override]
        token = super().get_token(user)
        token[settings.PORTIER_JWT_EMAIL_CLAIM] = user.email
        token[settings.PORTIER_JWT_ROLES_CLAIM] = sorted(user.groups.values_list("name", flat=True))
        token[PORTIER_CLAIM] = 1
        return token  # type: ignore[return-value]

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        login = attrs.get(self.username_field, "")
        if "@" in login:
            user = User.objects.filter(email__iexact=login).first()
            if user is not None:
                attrs[self.username_field] = user.get_username()
        return super().validate(attrs)

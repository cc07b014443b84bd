"""API keys through the management API: issued (the secret answered once), renamed, revoked;
never a hash or a secret afterwards."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied

from accounts.models import ApiKey, User
from accounts.services import api_key_issue
from routing.api.serializer_base import full_clean

__all__ = ["ApiKeySerializer"]


class ApiKeySerializer(serializers.ModelSerializer):
    """A key by its public prefix: the secret is answered once, by create; never a hash."""

    owner = serializers.SlugRelatedField(
        slug_field="username",
        queryset=User.objects.filter(is_active=True),
        required=False,
        help_text="Username of the key's owner; the key acts as them. Default: the caller.",
    )
    key = serializers.CharField(
        read_only=True, help_text="The full key: answered once, when the key is created."
    )
    is_active = serializers.BooleanField(read_only=True)

    class Meta:
        model = ApiKey
        fields = [
            "prefix",
            "name",
            "owner",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
            "is_active",
            "key",
        ]
        read_only_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]

    def to_representation(self, api_key: ApiKey) -> dict[str, Any]:
        data = super().to_representation(api_key)
        secret = getattr(api_key, "_secret", None)
        if secret is None:
            data.pop("key", None)
        else:
            data["key"] = secret
        return data

    def validate_owner(self, owner: User) -> User:
        """A key acts as its owner: only a superuser, or who may change users, names another
        owner (otherwise anyone with add_apikey could mint a superuser's key)."""
        caller = self.context["request"].user
        if (
            self.instance is None
            and owner.pk != caller.pk
            and not (caller.is_superuser or caller.has_perm("accounts.change_user"))
        ):
            raise PermissionDenied(
                "Only a superuser, or a user who may change users, creates a key for another "
                "owner; leave out owner to create your own.",
                code="owner_forbidden",
            )
        return owner

    def create(self, validated_data: dict[str, Any]) -> ApiKey:
        owner = validated_data.get("owner") or self.context["request"].user
        probe = ApiKey(owner=owner, name=validated_data["name"], prefix="-", hashed_key="-")
        probe.expires_at = validated_data.get("expires_at")
        full_clean(probe)
        api_key, secret = api_key_issue(
            owner=owner, name=probe.name, expires_at=validated_data.get("expires_at")
        )
        api_key._secret = secret  # type: ignore[attr-defined]
        return api_key

    def update(self, api_key: ApiKey, validated_data: dict[str, Any]) -> ApiKey:
        if "owner" in validated_data and validated_data["owner"] != api_key.owner:
            raise serializers.ValidationError({"owner": "A key's owner cannot change."})
        for name in ("name", "expires_at"):
            if name in validated_data:
                setattr(api_key, name, validated_data[name])
        full_clean(api_key)
        api_key.save()
        return api_key

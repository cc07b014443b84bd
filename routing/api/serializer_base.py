"""What every management API serializer shares: the admin's validation on every write.

A model's full_clean() (its clean(), field validators and unique checks) runs before any save,
and Django's ValidationError becomes DRF's, so the caller gets 400 invalid_request with the bad
fields named as the API names them; nested writes need their own models' permissions.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied

from routing.models import split_csv

__all__ = ["CleanModelSerializer", "CsvListField", "full_clean", "require_perms"]


def full_clean(instance: Any, names: dict[str, str] | None = None, prefix: str = "") -> None:
    """The model's own validation, as DRF field errors named as the API names the fields."""
    try:
        instance.full_clean()
    except DjangoValidationError as exc:
        names = names or {}
        errors: dict[str, Any] = {}
        for field, messages in exc.message_dict.items():
            key = "non_field_errors" if field == "__all__" else names.get(field, field)
            errors[f"{prefix}{key}"] = messages
        raise serializers.ValidationError(errors) from None


def require_perms(serializer: serializers.Serializer, model: type[Any], actions: set[str]) -> None:
    """A nested write changes related rows: the caller needs those rows' own permissions, as in
    the admin's inlines (403 otherwise)."""
    request = serializer.context.get("request")
    user = getattr(request, "user", None)
    meta = model._meta
    wanted = [f"{meta.app_label}.{action}_{meta.model_name}" for action in sorted(actions)]
    if wanted and not (user is not None and user.has_perms(wanted)):
        raise PermissionDenied(
            f"Changing these {meta.verbose_name_plural} needs the permissions {', '.join(wanted)}."
        )


class CsvListField(serializers.ListField):
    """A comma-separated model field (hosts, methods) as a list of strings."""

    child = serializers.CharField(max_length=253)

    def to_representation(self, data: str) -> list[str]:
        return split_csv(data)

    def to_internal_value(self, data: Any) -> str:
        return ", ".join(super().to_internal_value(data))


class CleanModelSerializer(serializers.ModelSerializer):
    """Saves through the model after its full_clean(); subclasses add related rows."""

    def create(self, validated_data: dict[str, Any]) -> Any:
        return self._save(self.Meta.model(), validated_data)

    def update(self, instance: Any, validated_data: dict[str, Any]) -> Any:
        return self._save(instance, validated_data)

    def _save(self, instance: Any, data: dict[str, Any]) -> Any:
        related = {name: data.pop(name) for name in self.related_fields() if name in data}
        for name, value in data.items():
            setattr(instance, name, value)
        full_clean(instance, self.model_names())
        self.check_related(instance, related)
        instance.save()
        self.save_related(instance, related)
        return instance

    def model_names(self) -> dict[str, str]:
        """Model field name -> the API's name, for errors raised by the model."""
        return {field.source: name for name, field in self.fields.items() if field.source != "*"}

    def related_fields(self) -> tuple[str, ...]:
        return ()

    def check_related(self, instance: Any, related: dict[str, Any]) -> None:
        """Rules that span the object and its related rows, checked before anything is saved."""

    def save_related(self, instance: Any, related: dict[str, Any]) -> None:
        """Related rows, saved after the object."""

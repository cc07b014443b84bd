"""The management API's representations of the configuration models.

Every write runs the admin's validation: the model's full_clean() (its clean(), field validators
and unique checks) and the admin forms' cross-object rules, and Django's ValidationError becomes
DRF's, so the caller gets 400 invalid_request with the bad fields named as the API names them.
Writes save through the models, so routing.signals publishes and simple_history records them.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied

from accounts.models import ApiKey, User
from accounts.services import api_key_issue
from audit.models import AuditEntry
from routing.models import (
    ConfigRevision,
    GatewayDefaults,
    RateLimitTier,
    RolePolicy,
    Route,
    RouteTierOverride,
    Service,
    Target,
    split_csv,
)
from routing.rules import policy_roles_problem, route_service_problem, service_upstream_problem

__all__ = [
    "ApiKeySerializer",
    "AuditEntrySerializer",
    "CachePurgeSerializer",
    "ConfigRevisionSerializer",
    "DefaultsSerializer",
    "PolicySerializer",
    "RollbackSerializer",
    "RouteSerializer",
    "ServiceSerializer",
    "TierSerializer",
]


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


class TargetSerializer(serializers.ModelSerializer):
    class Meta:
        model = Target
        fields = ["url", "weight", "enabled"]
        # Uniqueness per service is checked with the service (full_clean of each target).
        validators: list[Any] = []


class ServiceSerializer(CleanModelSerializer):
    """A service with its targets: writing `targets` replaces them (matched by URL)."""

    targets = TargetSerializer(many=True, required=False)

    class Meta:
        model = Service
        fields = [
            "name",
            "description",
            "enabled",
            "targets",
            "balancing",
            "hash_on",
            "hash_header",
            "connect_timeout",
            "read_timeout",
            "write_timeout",
            "total_timeout",
            "max_in_flight",
            "retries",
            "retry_statuses",
            "health_path",
            "health_interval",
            "health_timeout",
            "healthy_threshold",
            "unhealthy_threshold",
            "breaker_failures",
            "breaker_statuses",
            "breaker_cooldown",
            "allow_registration",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]

    def related_fields(self) -> tuple[str, ...]:
        return ("targets",)

    def check_related(self, service: Service, related: dict[str, Any]) -> None:
        if "targets" in related:
            urls = [target["url"] for target in related["targets"]]
            if len(set(urls)) != len(urls):
                raise serializers.ValidationError({"targets": "A target URL is listed twice."})
            require_perms(self, Target, self._target_actions(service, related["targets"]))
            serving = any(target.get("enabled", True) for target in related["targets"])
        else:
            serving = service.pk is not None and service.targets.filter(enabled=True).exists()
        problem = service_upstream_problem(
            enabled=service.enabled,
            allow_registration=service.allow_registration,
            has_enabled_target=serving,
        )
        if problem:
            raise serializers.ValidationError({"targets": problem})

    @staticmethod
    def _target_actions(service: Service, wanted: list[dict[str, Any]]) -> set[str]:
        """What writing `targets` does to the service's Target rows: add, change, delete."""
        existing = {t.url: t for t in service.targets.all()} if service.pk else {}
        actions: set[str] = set()
        for data in wanted:
            target = existing.pop(data["url"], None)
            if target is None:
                actions.add("add")
            elif any(getattr(target, name) != value for name, value in data.items()):
                actions.add("change")
        if existing:
            actions.add("delete")
        return actions

    def save_related(self, service: Service, related: dict[str, Any]) -> None:
        if "targets" not in related:
            return
        existing = {target.url: target for target in service.targets.all()}
        wanted = related["targets"]
        for index, data in enumerate(wanted):
            target = existing.pop(data["url"], None) or Target(service=service)
            for name, value in data.items():
                setattr(target, name, value)
            full_clean(target, prefix=f"targets[{index}].")
            target.save()
        for target in existing.values():
            target.delete()


class PolicySerializer(CleanModelSerializer):
    roles = serializers.SlugRelatedField(
        slug_field="name", queryset=Group.objects.all(), many=True, required=False
    )

    class Meta:
        model = RolePolicy
        fields = ["name", "kind", "roles", "description"]

    def related_fields(self) -> tuple[str, ...]:
        return ("roles",)

    def check_related(self, policy: RolePolicy, related: dict[str, Any]) -> None:
        if "roles" in related:
            roles = related["roles"]
        else:
            roles = list(policy.roles.all()) if policy.pk else []
        problem = policy_roles_problem(policy.kind, roles)
        if problem:
            raise serializers.ValidationError({"roles": problem})

    def save_related(self, policy: RolePolicy, related: dict[str, Any]) -> None:
        if "roles" in related:
            policy.roles.set(related["roles"])


class TierSerializer(CleanModelSerializer):
    class Meta:
        model = RateLimitTier
        fields = ["name", "rate", "key", "header_name", "per_method", "description"]


# Spelt as their JSON columns (routing.config.edge, routing.config.transforms); null inherits.
ROUTE_EDGE_FIELDS = (
    "transform",
    "cors",
    "security_headers",
    "https_redirect",
    "compression",
    "ip_allow",
    "ip_deny",
)


class RouteSerializer(CleanModelSerializer):
    """A route, its policy and tier by name, and `tiers_by_role` ({role: tier})."""

    service = serializers.SlugRelatedField(slug_field="name", queryset=Service.objects.all())
    methods = CsvListField(required=False)
    hosts = CsvListField(required=False)
    policy = serializers.SlugRelatedField(
        source="role_policy",
        slug_field="name",
        queryset=RolePolicy.objects.all(),
        allow_null=True,
        required=False,
    )
    tier = serializers.SlugRelatedField(
        source="rate_limit_tier",
        slug_field="name",
        queryset=RateLimitTier.objects.all(),
        allow_null=True,
        required=False,
    )
    tiers_by_role = serializers.DictField(
        child=serializers.CharField(), required=False, help_text="Role name -> tier name."
    )

    class Meta:
        model = Route
        fields = [
            "name",
            "service",
            "enabled",
            "priority",
            "match_type",
            "path",
            "methods",
            "hosts",
            "header_matches",
            "strip_prefix",
            "rewrite",
            "preserve_host",
            "forward_authorization",
            "retry_unsafe_methods",
            "stream_uploads",
            "max_body_bytes",
            "policy",
            "tier",
            "tiers_by_role",
            "audit",
            *ROUTE_EDGE_FIELDS,
            "cache",
            "cache_generation",
            "created_at",
            "updated_at",
        ]
        # cache_generation is bumped by POST .../purge-cache only (routing.cache_purge).
        read_only_fields = ["cache_generation", "created_at", "updated_at"]

    def to_representation(self, route: Route) -> dict[str, Any]:
        data = super().to_representation(route)
        overrides = route.tier_overrides.select_related("role", "tier").order_by("role__name")
        data["tiers_by_role"] = {o.role.name: o.tier.name for o in overrides}
        return data

    def validate_tiers_by_role(self, value: dict[str, str]) -> dict[Group, RateLimitTier]:
        roles = Group.objects.in_bulk(list(value), field_name="name")
        tiers = RateLimitTier.objects.in_bulk(list(value.values()), field_name="name")
        errors = [f"No role named {name!r}." for name in value if name not in roles]
        errors += [f"No tier named {name!r}." for name in set(value.values()) - set(tiers)]
        if errors:
            raise serializers.ValidationError(errors)
        return {roles[role]: tiers[tier] for role, tier in value.items()}

    def related_fields(self) -> tuple[str, ...]:
        return ("tiers_by_role",)

    def check_related(self, route: Route, related: dict[str, Any]) -> None:
        problem = route_service_problem(route_enabled=route.enabled, service=route.service)
        if problem:
            raise serializers.ValidationError({"service": problem})
        if "tiers_by_role" in related:
            wanted: dict[Group, RateLimitTier] = related["tiers_by_role"]
            existing = (
                {o.role_id: o.tier_id for o in route.tier_overrides.all()} if route.pk else {}
            )
            actions: set[str] = set()
            for role, tier in wanted.items():
                if role.pk not in existing:
                    actions.add("add")
                elif existing.pop(role.pk) != tier.pk:
                    actions.add("change")
            if existing:
                actions.add("delete")
            require_perms(self, RouteTierOverride, actions)

    def save_related(self, route: Route, related: dict[str, Any]) -> None:
        if "tiers_by_role" not in related:
            return
        wanted: dict[Group, RateLimitTier] = related["tiers_by_role"]
        route.tier_overrides.exclude(role__in=list(wanted)).delete()
        for role, tier in wanted.items():
            override = route.tier_overrides.filter(role=role).first()
            if override is None:
                override = RouteTierOverride(route=route, role=role, tier=tier)
            elif override.tier_id == tier.pk:
                continue
            override.tier = tier
            full_clean(override, prefix="tiers_by_role.")
            override.save()


class CachePurgeSerializer(serializers.Serializer):
    """The answer of POST /admin/api/routes/{name}/purge-cache."""

    route = serializers.CharField(read_only=True, help_text="The route's name.")
    cache_generation = serializers.IntegerField(
        read_only=True, help_text="The route's new generation: no answer cached before is served."
    )


class DefaultsSerializer(CleanModelSerializer):
    """The gateway-wide edge settings (the one GatewayDefaults row)."""

    class Meta:
        model = GatewayDefaults
        fields = [
            "cors",
            "security_headers",
            "https_redirect",
            "compression",
            "compression_min_bytes",
        ]


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


class AuditEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEntry
        fields = [field.name for field in AuditEntry._meta.concrete_fields]


class ConfigRevisionSerializer(serializers.ModelSerializer):
    """One configuration version of the timeline (routing.api.revisions), without its document:
    who published it, when, from where, why, and a one-line summary of its changes."""

    author = serializers.SerializerMethodField(help_text="The author's username, if known.")

    class Meta:
        model = ConfigRevision
        fields = ("number", "created_at", "author", "source", "comment", "summary")
        read_only_fields = fields

    def get_author(self, revision: ConfigRevision) -> str | None:
        return revision.author_name or None


class RollbackSerializer(serializers.Serializer):
    """The body of a rollback: an optional comment, recorded after "Rollback to vN: "."""

    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)

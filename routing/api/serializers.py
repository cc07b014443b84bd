"""The management API's representations of the configuration models: services with their
targets, policies, tiers, routes, the gateway defaults.

Every write runs the admin's validation (routing.api.serializer_base) and the admin forms'
cross-object rules (routing.rules). Writes save through the models, so routing.signals
publishes and simple_history records them. API keys: routing.api.key_serializers; the audit
trail and the timeline: routing.api.record_serializers.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group
from rest_framework import serializers

from routing.api.serializer_base import (
    CleanModelSerializer,
    CsvListField,
    full_clean,
    require_perms,
)
from routing.models import (
    ROUTE_EDGE_FIELDS,
    ROUTE_REALTIME_FIELDS,
    GatewayDefaults,
    RateLimitTier,
    RolePolicy,
    Route,
    RouteTierOverride,
    Service,
    Target,
)
from routing.rules import (
    policy_roles_problem,
    route_backends_problem,
    route_service_problem,
    service_upstream_problem,
)

__all__ = [
    "CachePurgeSerializer",
    "DefaultsSerializer",
    "PolicySerializer",
    "RouteSerializer",
    "ServiceSerializer",
    "TierSerializer",
]


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
        fields = ["name", "kind", "roles", "report_only", "description"]

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
        fields = ["name", "rate", "key", "header_name", "per_method", "report_only", "description"]


# Spelt as their JSON columns (routing.config.edge, routing.config.transforms); null inherits.
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
            *ROUTE_REALTIME_FIELDS,
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
        problem = route_backends_problem(route.backends)
        if problem:
            raise serializers.ValidationError({"backends": problem})
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

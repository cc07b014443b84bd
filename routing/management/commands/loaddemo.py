"""Create the demo configuration: a service on the echo upstream, a public and an admin-only
route to it, the `admin` role, and the seed's rate-limit tiers.

Idempotent: running it again updates the demo rows instead of duplicating them.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from routing.models import RateLimitTier, RolePolicy, Route, Service, Target


class Command(BaseCommand):
    help = "Create a demo service (the echo upstream on 127.0.0.1) and the /demo route."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--upstream", default="http://127.0.0.1:9001")

    @transaction.atomic
    def handle(self, *args: Any, upstream: str, **options: Any) -> None:
        service, _ = Service.objects.update_or_create(
            name="demo-echo",
            defaults={
                "description": "Echo upstream started by `dev.py run`.",
                "health_path": "/health",  # the echo answers any path: healthy while it runs
            },
        )
        Target.objects.update_or_create(service=service, url=upstream, defaults={"enabled": True})
        Route.objects.update_or_create(
            name="demo",
            defaults={
                "service": service,
                "path": "/demo",
                "match_type": "prefix",
                "strip_prefix": True,
                "enabled": True,
            },
        )
        RolePolicy.objects.get_or_create(
            name="public", defaults={"kind": RolePolicy.Kind.PUBLIC, "description": "Anyone."}
        )
        admins, _ = RolePolicy.objects.get_or_create(
            name="admins",
            defaults={
                "kind": RolePolicy.Kind.ADMIN_ONLY,
                "description": "Gateway admins; audited.",
            },
        )
        Group.objects.get_or_create(name=settings.PORTIER_ADMIN_ROLE)
        Route.objects.update_or_create(
            name="demo-admin",
            defaults={
                "service": service,
                "path": "/demo-admin",
                "match_type": "prefix",
                "strip_prefix": True,
                "enabled": True,
                "role_policy": admins,
            },
        )
        # The seed's defaults, ready to attach to routes.
        RateLimitTier.objects.get_or_create(
            name="general", defaults={"rate": "100/15m", "key": RateLimitTier.Key.USER}
        )
        RateLimitTier.objects.get_or_create(
            name="auth", defaults={"rate": "5/15m", "key": RateLimitTier.Key.IP}
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo loaded: /demo/* (public) and /demo-admin/* (admin role) -> {upstream}."
            )
        )

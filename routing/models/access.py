"""Who may call a route (role policies) and how often (rate-limit tiers)."""

from __future__ import annotations

import re

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models
from simple_history.models import HistoricalRecords

from routing.models.services import HEADER_NAME_RE

_RATE_RE = re.compile(r"^[1-9]\d*/([1-9]\d*)?[smhd]$")


class RolePolicy(models.Model):
    """Who may call a route: enforced by the identity stage (a route without one is public)."""

    class Kind(models.TextChoices):
        PUBLIC = "public", "Public (no credentials)"
        AUTHENTICATED = "authenticated", "Any authenticated caller"
        ANY_OF = "any_of", "Callers holding any of the roles"
        ALL_OF = "all_of", "Callers holding all of the roles"
        ADMIN_ONLY = "admin_only", "Admins only (audited)"

    name = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.AUTHENTICATED)
    roles = models.ManyToManyField(Group, blank=True, related_name="role_policies")
    description = models.CharField(max_length=255, blank=True)
    report_only = models.BooleanField(
        default=False,
        help_text="Report only: callers the policy would refuse are let through, counted in "
        "metrics, the access log and the dashboard, so you see whom it would block before "
        "enforcing it.",
    )

    history = HistoricalRecords(
        app="audit",
        verbose_name="role policy change",
        verbose_name_plural="role policy changes",
        m2m_fields=["roles"],
    )

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "role policies"

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    def clean(self) -> None:
        if self.report_only and self.kind == self.Kind.ADMIN_ONLY:
            # Report-only lets refused callers through: on the admin routes that is anyone.
            raise ValidationError(
                {
                    "report_only": "An admin-only policy is always enforced: report-only would "
                    "let anyone reach the routes it guards."
                }
            )


class RateLimitTier(models.Model):
    """A request budget such as 100/m per user, enforced by the rate-limit stage."""

    class Key(models.TextChoices):
        USER = "user", "Per user"
        API_KEY = "api_key", "Per API key"
        IP = "ip", "Per client IP"
        ROUTE = "route", "Route-wide"
        HEADER = "header", "Per value of a header"

    name = models.SlugField(max_length=100, unique=True)
    rate = models.CharField(
        max_length=20, help_text="Requests per period: 100/m, 5/15m, 1000/h, 10000/d."
    )
    key = models.CharField(max_length=20, choices=Key.choices, default=Key.USER)
    header_name = models.CharField(
        max_length=100, blank=True, help_text="Header whose value is the key (key = header)."
    )
    per_method = models.BooleanField(default=False, help_text="Count each HTTP method separately.")
    description = models.CharField(max_length=255, blank=True)
    report_only = models.BooleanField(
        default=False,
        help_text="Report only: requests over the limit are counted and served, and reported in "
        "metrics, the access log and the dashboard; clients get no RateLimit headers.",
    )

    history = HistoricalRecords(
        app="audit",
        verbose_name="rate-limit tier change",
        verbose_name_plural="rate-limit tier changes",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.rate})"

    def clean(self) -> None:
        if not _RATE_RE.match(self.rate.strip()):
            raise ValidationError({"rate": "Write the rate as count/period, e.g. 100/m or 5/15m."})
        self.rate = self.rate.strip()
        if self.key == self.Key.HEADER and not HEADER_NAME_RE.match(self.header_name):
            raise ValidationError({"header_name": "A header-keyed tier needs a header name."})

"""The audit trail: one row per request to an audited route (admin-only policy or audit flag),
allowed or denied, committed before the answer is sent. Never a token, cookie, password or key."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class AuditEntry(models.Model):
    """What an auditor needs to answer "who did what, through which route, and was it allowed"."""

    class Outcome(models.TextChoices):
        ALLOWED = "allowed", "Allowed"
        DENIED = "denied", "Denied"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    request_id = models.CharField(max_length=128, db_index=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    reason = models.CharField(
        max_length=40, blank=True, help_text="Why it was denied: invalid_token, forbidden, ..."
    )
    auth_method = models.CharField(max_length=10, blank=True, help_text="jwt, api_key or empty.")
    caller_id = models.CharField(
        max_length=256, blank=True, help_text="User id (token or key owner)."
    )
    caller_email = models.CharField(max_length=256, blank=True)
    key_prefix = models.CharField(
        max_length=16, blank=True, help_text="API key prefix, never the key."
    )
    roles = models.TextField(blank=True)  # every role the caller holds: no length to cut at
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    # The parser's longest method is 15 characters (VERSION-CONTROL); room to spare.
    method = models.CharField(max_length=32)
    path = models.TextField()
    query = models.TextField(blank=True, help_text="Secret-looking parameters are redacted.")
    route = models.CharField(max_length=100, blank=True)
    service = models.CharField(max_length=100, blank=True)
    target = models.CharField(max_length=300, blank=True)
    status = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Sent to the client."
    )
    upstream_status = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    bytes_in = models.BigIntegerField(null=True, blank=True)
    bytes_out = models.BigIntegerField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["caller_id", "created_at"], name="audit_caller_time"),
            models.Index(fields=["route", "created_at"], name="audit_route_time"),
            models.Index(fields=["outcome", "created_at"], name="audit_outcome_time"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.method} {self.path} {self.outcome}"

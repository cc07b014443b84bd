"""Portier's users and API keys.

The user model is custom from day one, so later fields need no migration gymnastics; roles are
Django groups. API keys are stored only as a SHA-256 hash and found by their public prefix.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone
from simple_history.models import HistoricalRecords


class User(AbstractUser):
    """A person who administers the gateway or calls it; roles are Django groups."""

    # A signed token cannot be changed once issued: "sign out everywhere" (or losing a role)
    # records this time instead, and the gateway refuses the user's tokens issued before it
    # (accounts.denylist publishes it to every process).
    tokens_valid_after = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="Tokens issued before this time are refused (set by 'sign out everywhere').",
    )

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"


class ApiKey(models.Model):
    """A credential for a third-party integration, acting as its owner (and the owner's roles).

    The full key is shown once, at creation; only its hash is stored. High-entropy random keys
    make a fast hash safe here (no password-style stretching needed).
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100, help_text="What the key is for, e.g. billing-sync.")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty = never expires.")
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    # The hash never enters the history: an auditor sees who changed a key, never its secret.
    history = HistoricalRecords(
        app="audit",
        verbose_name="API key change",
        verbose_name_plural="API key changes",
        excluded_fields=["hashed_key"],
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"
        indexes = [models.Index(fields=["owner", "revoked_at"], name="apikey_owner_revoked")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()

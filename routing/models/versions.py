"""Configuration versions: the published version number, and the timeline of every version
with its document."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ConfigVersion(models.Model):
    """The published configuration's version number (one row): bumped under a row lock by every
    publish, so concurrent publishers are serialised and the newest configuration always wins."""

    number = models.PositiveBigIntegerField(default=0)
    published_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"config v{self.number}"


class ConfigRevision(models.Model):
    """One entry of the configuration timeline: the declarative document (without API keys) as a
    published version made it, who made it, from where and why. Written by publish() in the
    version bump's transaction, only when the document differs from the previous entry's, so a
    republish of the same data (a rebuilt cache) adds nothing; a rollback applies `document`."""

    class Source(models.TextChoices):
        ADMIN = "admin", "admin"
        API = "api", "management API"
        IMPORT = "import", "import"
        ROLLBACK = "rollback", "rollback"
        SYSTEM = "system", "system"

    number = models.PositiveBigIntegerField(
        primary_key=True, help_text="The published configuration version."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # The author's username as it was: the timeline still names a user deleted since.
    author_name = models.CharField(max_length=150, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.SYSTEM)
    comment = models.TextField(blank=True)
    summary = models.TextField(blank=True, help_text="The changes since the previous version.")
    document = models.JSONField()

    class Meta:
        ordering = ("-number",)
        verbose_name = "configuration version"
        verbose_name_plural = "configuration timeline"

    def __str__(self) -> str:
        return f"v{self.number}"

"""Read-only records through the management API: the audit trail and the configuration
timeline (and the body of a rollback to one of its versions)."""

from __future__ import annotations

from rest_framework import serializers

from audit.models import AuditEntry
from routing.models import ConfigRevision

__all__ = ["AuditEntrySerializer", "ConfigRevisionSerializer", "RollbackSerializer"]


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

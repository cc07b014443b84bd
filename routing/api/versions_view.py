"""The configuration timeline through the management API (routing.api.revisions):

    GET  /admin/api/versions/              newest first, paginated: number, created_at, author,
                                           source, comment, summary
    GET  /admin/api/versions/N             one version, its document (without API keys) and its
                                           diff against the previous version, or ?against=M
    POST /admin/api/versions/N/rollback    {"comment": "..."} optional: apply version N's
                                           document as a new version (prune; API keys untouched)

Reading needs what reading the configuration document needs, rolling back what applying one
needs (routing.api.permissions.ConfigDocumentPermission): a version is the document as it was.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from routing.api.document_shape import DocumentInvalid
from routing.api.permissions import ConfigDocumentPermission
from routing.api.record_serializers import ConfigRevisionSerializer, RollbackSerializer
from routing.api.revision_diff import EMPTY_DOCUMENT, document_diff
from routing.api.revisions import revision_rollback
from routing.api.views import ManagementApi
from routing.models import ConfigRevision

__all__ = ["VersionListView", "VersionRollbackView", "VersionView", "revision_or_404"]


def revision_or_404(number: Any) -> ConfigRevision:
    revision = ConfigRevision.objects.filter(number=number).first()
    if revision is None:
        raise NotFound(f"No configuration version {number}.")
    return revision


def previous_of(revision: ConfigRevision) -> ConfigRevision | None:
    """The version before it in the timeline (numbers skip publishes that changed nothing)."""
    return ConfigRevision.objects.filter(number__lt=revision.number).order_by("-number").first()


class VersionListView(ManagementApi, ListAPIView):
    """Every configuration version, newest first."""

    permission_classes = [ConfigDocumentPermission]
    serializer_class = ConfigRevisionSerializer

    def get_queryset(self) -> QuerySet[ConfigRevision]:
        return ConfigRevision.objects.defer("document").order_by("-number")


class VersionView(ManagementApi, APIView):
    """One configuration version with its document and its diff."""

    permission_classes = [ConfigDocumentPermission]

    @extend_schema(
        summary="One configuration version, its document and its diff",
        parameters=[
            OpenApiParameter(
                "against", int, description="Diff against this version, not the previous one."
            )
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request, number: str) -> Response:
        revision = revision_or_404(number)
        raw = request.query_params.get("against")
        if raw:
            if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
                raise ValidationError({"against": "Use a version number."})
            base = ConfigRevision.objects.filter(number=int(raw)).first()
            if base is None:
                raise ValidationError({"against": f"No configuration version {raw}."})
        else:
            base = previous_of(revision)
        changes = document_diff(base.document if base else EMPTY_DOCUMENT, revision.document)
        body = {
            **ConfigRevisionSerializer(revision).data,
            "against": base.number if base else None,
            "changes": changes.as_dict(),
            "document": revision.document,
        }
        return Response(body)


class VersionRollbackView(ManagementApi, APIView):
    """Roll back to a configuration version: its document applied as a new version."""

    permission_classes = [ConfigDocumentPermission]

    @extend_schema(
        summary="Roll back to a configuration version",
        request=RollbackSerializer,
        responses={200: OpenApiTypes.OBJECT},
    )
    def post(self, request: Request, number: str) -> Response:
        revision = revision_or_404(number)
        body = RollbackSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            result = revision_rollback(
                revision, user=request.user, comment=body.validated_data["comment"]
            )
        except DocumentInvalid as exc:
            raise ValidationError(
                {"document": [f"Version {revision.number} no longer applies.", *exc.errors]}
            ) from None
        return Response(
            {
                "changed": not result.changes.is_empty(),
                "version": (
                    ConfigRevisionSerializer(result.revision).data if result.revision else None
                ),
                "changes": result.changes.as_dict(),
            }
        )

"""GET / PUT /admin/api/config: the whole declarative document (routing.api.document), the
API form of `portier_export` / `portier_import`.

GET answers the document as JSON, or YAML when the Accept header asks for application/yaml (or
?format=yaml), with an ETag; its `api_keys` only to a caller with accounts.view_apikey. PUT
applies a document (a YAML or JSON body) in one transaction, publishing one configuration
version; ?dry_run=1 answers the diff and changes nothing; ?prune=1 removes what the document
lacks; ?comment= is recorded with the version in the configuration timeline. A stale If-Match
is 412, so a CI job never overwrites a change made since it exported.
"""

from __future__ import annotations

from typing import Any

import yaml
from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from routing.api.authentication import AdminSessionAuthentication, UserCredentialsAuthentication
from routing.api.concurrency import etag_of, require_current
from routing.api.document import (
    DocumentInvalid,
    document_apply,
    document_dump,
    document_export,
    document_load,
)
from routing.api.permissions import ConfigDocumentPermission
from routing.api.revisions import attributed
from routing.models import ConfigRevision, ConfigVersion

__all__ = ["ConfigDocumentView"]

_YES = {"1", "true", "yes"}


class YamlRenderer(BaseRenderer):
    media_type = "application/yaml"
    format = "yaml"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        if isinstance(data, dict) and "version" in data and "error" not in data:
            return document_dump(data).encode()
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()


class YamlParser(BaseParser):
    """A YAML body, read with the document's own loader (its errors name the bad line)."""

    media_type = "application/yaml"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            text = stream.read().decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("The document is not UTF-8 text.") from None
        try:
            return document_load(text)
        except DocumentInvalid as exc:
            raise ValidationError({"document": exc.errors}) from None


class _AlsoYamlParser(YamlParser):
    media_type = "application/x-yaml"


class _TextYamlParser(YamlParser):
    media_type = "text/yaml"


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in _YES


def _export_for(request: Request) -> dict[str, Any]:
    """The document as this caller may see it: `api_keys` only with accounts.view_apikey (the
    ETag is computed over the same view, so If-Match works either way)."""
    return document_export(api_keys=request.user.has_perm("accounts.view_apikey"))


class ConfigDocumentView(APIView):
    """The whole configuration as one declarative document (docs/configuration.md)."""

    authentication_classes = [UserCredentialsAuthentication, AdminSessionAuthentication]
    permission_classes = [ConfigDocumentPermission]
    renderer_classes = [JSONRenderer, YamlRenderer]
    parser_classes = [JSONParser, YamlParser, _AlsoYamlParser, _TextYamlParser]

    @extend_schema(
        summary="The whole configuration as one declarative document",
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        document = _export_for(request)
        return Response(document, headers={"ETag": etag_of(document)})

    @extend_schema(
        summary="Apply a declarative document",
        request={"application/json": OpenApiTypes.OBJECT, "application/yaml": OpenApiTypes.STR},
        parameters=[
            OpenApiParameter("dry_run", bool, description="Answer the diff, change nothing."),
            OpenApiParameter("prune", bool, description="Remove what the document lacks."),
            OpenApiParameter("comment", str, description="Recorded with the new version."),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def put(self, request: Request) -> Response:
        dry_run, prune = _flag(request, "dry_run"), _flag(request, "prune")
        document = request.data
        comment = request.query_params.get("comment", "")[:2000]
        with attributed(request.user, ConfigRevision.Source.API, comment), transaction.atomic():
            # Two documents applied at once run one after the other (the version row's lock,
            # which publishing takes too): the second compares its If-Match with what the first
            # saved. Single-object writes through the API or the admin do not take this lock.
            ConfigVersion.objects.get_or_create(pk=1)
            list(ConfigVersion.objects.select_for_update().filter(pk=1).values_list("pk"))
            require_current(request, etag_of(_export_for(request)))
            try:
                changes = document_apply(document, prune=prune, dry_run=dry_run, actor=request.user)
            except DocumentInvalid as exc:
                raise ValidationError({"document": exc.errors}) from None
        body = {"dry_run": dry_run, "changed": not changes.is_empty(), "changes": changes.as_dict()}
        headers = {} if dry_run else {"ETag": etag_of(_export_for(request))}
        return Response(body, headers=headers)

"""Optimistic concurrency for the management API: an ETag on every object (a hash of what the
caller sees) and If-Match on every change, so two automations never silently overwrite each
other. A missing If-Match is allowed (a script that does not care); a stale one is 412."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.request import Request

__all__ = ["PreconditionFailed", "etag_of", "require_current"]

# Never part of an object's version: the secret is answered once, at creation.
_NOT_VERSIONED = {"key"}


class PreconditionFailed(APIException):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_detail = (
        "The object changed since you read it (If-Match does not match its ETag); read it again "
        "and reapply your change."
    )
    default_code = "precondition_failed"


def etag_of(representation: Any) -> str:
    """A strong ETag: the SHA-256 of the representation as canonical JSON."""
    if isinstance(representation, dict):
        representation = {k: v for k, v in representation.items() if k not in _NOT_VERSIONED}
    canonical = json.dumps(representation, sort_keys=True, separators=(",", ":"), default=str)
    return '"' + hashlib.sha256(canonical.encode()).hexdigest()[:32] + '"'


def require_current(request: Request, current_etag: str) -> None:
    """412 unless If-Match is absent, `*`, or lists the current ETag (weak ones compare too)."""
    header = request.headers.get("If-Match")
    if header is None:
        return
    offered = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    if "*" in offered or current_etag in offered:
        return
    raise PreconditionFailed()

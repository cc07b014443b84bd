"""The configuration timeline: who made each published version, recording it, rolling back.

`publish()` (routing.config.publish) calls `revision_record(number)` in the transaction that
bumps the version, so every publish that changes the configuration is one timeline entry, and a
publish that fails (cache down) leaves none. Publishing runs on commit, after the write that
caused it, so the author cannot be passed as an argument; it is found, in this order:

1. `attributed(author, source, comment)` around the write and its commit: document_apply
   (source "import"), the API's document PUT (source "api", with the caller's comment) and a
   rollback (source "rollback") set it; the outermost one wins, so a rollback's own
   document_apply does not turn it into an import.
2. Else the request django-simple-history holds for this thread (its middleware): an admin form
   or a management API write, by the request's user.
3. Else the system (a rebuilt cache, a shell): no author.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from simple_history.models import HistoricalRecords

from routing.api.document_plan import Changes, same_value
from routing.api.revision_diff import EMPTY_DOCUMENT, changes_summary, document_diff
from routing.models import ConfigRevision

__all__ = [
    "API_PREFIX",
    "Attribution",
    "RollbackResult",
    "attributed",
    "current_attribution",
    "record_published",
    "revision_record",
    "revision_rollback",
]

API_PREFIX = "/admin/api/"  # where gateway_site.urls mounts the management API

Source = ConfigRevision.Source


@dataclass(frozen=True)
class Attribution:
    author: Any  # a saved user, or None
    source: str
    comment: str = ""


_attribution: ContextVar[Attribution | None] = ContextVar("portier_revision", default=None)


@contextmanager
def attributed(author: Any, source: str, comment: str = "") -> Iterator[None]:
    """Name the author, source and comment of the version the enclosed write publishes. Wrap
    the whole transaction: publishing happens when it commits. An enclosing one wins."""
    if _attribution.get() is not None:
        yield
        return
    user = author if getattr(author, "is_authenticated", False) else None
    token = _attribution.set(Attribution(user, source, comment.strip()))
    try:
        yield
    finally:
        _attribution.reset(token)


def current_attribution() -> Attribution:
    """Who is publishing now (the module's docstring says how it is found)."""
    explicit = _attribution.get()
    if explicit is not None:
        return explicit
    request = getattr(HistoricalRecords.context, "request", None)
    if request is None:
        return Attribution(None, Source.SYSTEM)
    user = getattr(request, "user", None)
    author = user if getattr(user, "is_authenticated", False) else None
    source = Source.API if request.path.startswith(API_PREFIX) else Source.ADMIN
    return Attribution(author, source)


def _plain(document: dict[str, Any]) -> dict[str, Any]:
    """The document as the JSON column gives it back, so stored and fresh ones compare equal."""
    return json.loads(json.dumps(document, default=str))


def record_published(sender: Any = None, number: int = 0, **kwargs: Any) -> None:
    """The receiver of routing.config.publish.version_publishing."""
    revision_record(number)


def revision_record(number: int) -> ConfigRevision | None:
    """Record version `number` in the timeline, in the caller's transaction (publish's); None
    when the configuration is the previous entry's (a republish of the same data), or, before
    any entry, the empty configuration every gateway starts from (a cache rebuilt on a fresh
    database)."""
    from routing.api.document import document_export  # the document imports the models

    document = _plain(document_export(api_keys=False))
    previous = ConfigRevision.objects.order_by("-number").only("number", "document").first()
    baseline = previous.document if previous is not None else EMPTY_DOCUMENT
    if previous is None and not any(value for key, value in document.items() if key != "version"):
        return None
    if same_value(baseline, document):
        return None
    who = current_attribution()
    changes = document_diff(baseline, document)
    return ConfigRevision.objects.create(
        number=number,
        author=who.author,
        author_name=who.author.get_username() if who.author else "",
        source=who.source,
        comment=who.comment,
        summary=changes_summary(changes),
        document=document,
    )


@dataclass(frozen=True)
class RollbackResult:
    changes: Changes
    revision: ConfigRevision | None  # the new version; None when nothing changed


def revision_rollback(target: ConfigRevision, *, user: Any, comment: str = "") -> RollbackResult:
    """Apply version `target`'s document as a new version, in one transaction: everything it
    lacks is removed (prune), API keys are never touched (the stored document has none, and
    applying a document never writes keys). DocumentInvalid, and nothing changes, when the old
    document no longer validates."""
    from routing.api.document import document_apply

    note = f"Rollback to v{target.number}" + (f": {comment.strip()}" if comment.strip() else "")
    latest = ConfigRevision.objects.order_by("-number").values_list("number", flat=True).first()
    document = {key: value for key, value in target.document.items() if key != "api_keys"}
    # Published as the transaction commits, still inside the attribution.
    with attributed(user, Source.ROLLBACK, note), transaction.atomic():
        changes = document_apply(document, prune=True, actor=user)
    revision = None
    if not changes.is_empty():
        newer = ConfigRevision.objects.filter(source=Source.ROLLBACK, comment=note)
        if latest is not None:
            newer = newer.filter(number__gt=latest)
        revision = newer.select_related("author").order_by("-number").first()
    return RollbackResult(changes, revision)

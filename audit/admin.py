"""The audit trail and the configuration history in the admin, read-only for everyone.

The history of each app's models is registered by that app's admin with `ConfigChangeAdmin`
(routing.admin, accounts.admin): the audit app knows no other app's models.

Auditors (staff users in the Auditor group, audit/migrations/0003) hold the view permissions; no
one, superusers included, can add, change or delete a row here. The trail's list fits 1280 px:
times to the second, the caller by username (looked up for the whole page in one query),
latency in ms. The audit changelist exports what
it shows (its filters, search and dates) as CSV, streamed in blocks of rows.
"""

from __future__ import annotations

import csv
import io
import ipaddress
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.db import models
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.html import format_html, format_html_join
from django.utils.text import smart_split, unescape_string_literal

from audit.models import AuditEntry

__all__ = ["AuditEntryAdmin", "ConfigChangeAdmin", "csv_blocks"]

# Cells a spreadsheet would run as a formula (a client controls its User-Agent, for one).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_EXPORT_BLOCK_ROWS = 1000


class ReadOnlyAdmin(admin.ModelAdmin):
    """Visible with the view permission; nobody adds, changes or deletes, superusers included."""

    actions = None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- The audit trail -----------------------------------------------------------------------------


class StatusClassFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status_class"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("2xx", "2xx"), ("3xx", "3xx"), ("4xx", "4xx"), ("5xx", "5xx"), ("none", "None")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "none":
            return queryset.filter(status__isnull=True)
        if value in {"2xx", "3xx", "4xx", "5xx"}:
            low = int(value[0]) * 100
            return queryset.filter(status__gte=low, status__lt=low + 100)
        return queryset


class RouteFilter(admin.SimpleListFilter):
    """The routes the trail has seen, deleted ones included (read from the route index)."""

    title = "route"
    parameter_name = "route"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = (
            AuditEntry.objects.exclude(route="")
            .order_by("route")
            .values_list("route", flat=True)
            .distinct()
        )
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(route=self.value()) if self.value() else queryset


class AuthMethodFilter(admin.SimpleListFilter):
    title = "auth method"
    parameter_name = "auth_method"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("jwt", "JWT"), ("api_key", "API key"), ("none", "No credentials")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        return queryset.filter(auth_method="" if value == "none" else value)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_blocks(rows: Iterable[Iterable[Any]], header: list[str]) -> Iterator[str]:
    """CSV text in blocks of rows, the header first: one block per chunk the database returns."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for count, row in enumerate(rows, 1):
        writer.writerow([_cell(value) for value in row])
        if count % _EXPORT_BLOCK_ROWS == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


async def _async_blocks(blocks: Iterator[str]) -> AsyncIterator[str]:
    # Under ASGI a sync iterator would be read whole into memory first; this streams, reading
    # each block in the request's own thread, where its database cursor lives.
    read = sync_to_async(next, thread_sensitive=True)
    while (block := await read(blocks, None)) is not None:
        yield block


def _ip_search(term: str) -> Q | None:
    """A whole IP address matches exactly; the start of one (10.0.0.) as a prefix, a text lookup
    that Django runs on HOST(client_ip) on PostgreSQL. Anything else is not compared with the
    column at all: PostgreSQL's inet type rejects a value that is not an address."""
    try:
        return Q(client_ip=ipaddress.ip_address(term).compressed)
    except ValueError:
        pass
    if ("." in term or ":" in term) and all(char in "0123456789abcdefABCDEF.:" for char in term):
        return Q(client_ip__istartswith=term)
    return None


def usernames(entries: Iterable[AuditEntry]) -> dict[tuple[str, str], str]:
    """(caller id, caller email) -> username, in one query, for the entries whose caller is a
    user here. Both must match: a token from a separate auth service carries its own ids, which
    may be a local user's id too; its email tells them apart."""
    # A local user's id is a 64-bit integer: a longer number (an external issuer's subject) is
    # nobody here, and SQLite refuses it in an IN list (OverflowError).
    wanted = {
        (e.caller_id, e.caller_email.lower())
        for e in entries
        if e.caller_id.isascii() and e.caller_id.isdigit() and len(e.caller_id) <= 18
    }
    if not wanted:
        return {}
    user_model = get_user_model()
    users = user_model._default_manager.filter(pk__in={int(pk) for pk, _ in wanted})
    found = {}
    for pk, email, username in users.values_list("pk", "email", user_model.USERNAME_FIELD):
        if (str(pk), (email or "").lower()) in wanted:
            found[(str(pk), (email or "").lower())] = username
    return found


class AuditChangeList(ChangeList):
    """Looks up the page's callers' usernames in one query."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        entries = list(self.result_list)
        names = usernames(entries)
        for entry in entries:
            entry._username = names.get((entry.caller_id, entry.caller_email.lower()))


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    date_hierarchy = "created_at"
    list_display = (
        "time",
        "outcome_display",
        "request_display",
        "status",
        "caller",
        "route",
        "ip",
        "latency",
    )
    list_filter = ("outcome", RouteFilter, "method", StatusClassFilter, AuthMethodFilter)
    # get_search_results decides how each of these matches.
    search_fields = ("request_id", "caller_id", "caller_email", "key_prefix", "path", "client_ip")
    search_help_text = (
        "Request id, caller id, key prefix or IP address (exact); email or path (contains); "
        "the start of an IP address (10.0.0.)."
    )
    # Counting a large table for "x of y selected" costs more than the page itself.
    show_full_result_count = False
    list_per_page = 100
    fieldsets = (
        (None, {"fields": ("created_at", "request_id", "outcome", "reason")}),
        (
            "Caller",
            {"fields": ("auth_method", "caller_id", "caller_email", "key_prefix", "roles")},
        ),
        (
            "Request",
            {"fields": ("method", "path", "query", "client_ip", "user_agent", "bytes_in")},
        ),
        (
            "Routing and answer",
            {
                "fields": (
                    "route",
                    "service",
                    "target",
                    "status",
                    "upstream_status",
                    "latency_ms",
                    "bytes_out",
                )
            },
        ),
    )

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return AuditChangeList

    @admin.display(description="time", ordering="created_at")
    def time(self, obj: AuditEntry) -> str:
        return date_format(timezone.localtime(obj.created_at), "Y-m-d H:i:s")

    @admin.display(description="outcome", ordering="outcome")
    def outcome_display(self, obj: AuditEntry) -> str:
        return f"{obj.outcome}: {obj.reason}" if obj.reason else obj.outcome

    @admin.display(description="request", ordering="path")
    def request_display(self, obj: AuditEntry) -> str:
        return f"{obj.method} {obj.path}"

    @admin.display(description="caller", ordering="caller_id")
    def caller(self, obj: AuditEntry) -> str:
        """The username when the caller is a user here, else the email or id it came with."""
        name = getattr(obj, "_username", None) or obj.caller_email or obj.caller_id or "-"
        return f"{name} (key {obj.key_prefix})" if obj.key_prefix else name

    @admin.display(description="IP", ordering="client_ip")
    def ip(self, obj: AuditEntry) -> str:
        return obj.client_ip or "-"

    @admin.display(description="latency", ordering="latency_ms")
    def latency(self, obj: AuditEntry) -> str:
        return "-" if obj.latency_ms is None else f"{obj.latency_ms:.1f} ms"

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[AuditEntry], search_term: str
    ) -> tuple[QuerySet[AuditEntry], bool]:
        # Identifiers match exactly (request_id uses its index); every word must match something.
        for word in smart_split(search_term):
            if word.startswith(('"', "'")) and word[0] == word[-1]:
                word = unescape_string_literal(word)
            match = (
                Q(request_id=word)
                | Q(caller_id=word)
                | Q(key_prefix=word)
                | Q(caller_email__icontains=word)
                | Q(path__icontains=word)
            )
            if (ip := _ip_search(word)) is not None:
                match |= ip
            queryset = queryset.filter(match)
        return queryset, False

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_export"
        export = path("export/", self.admin_site.admin_view(self.export_view), name=name)
        return [export, *super().get_urls()]

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """Every row the changelist matches (not only its page), as CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            queryset = self.get_changelist_instance(request).queryset  # filtered, searched
        except IncorrectLookupParameters:
            changelist = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
            return HttpResponseRedirect(f"{changelist}?e=1")
        fields = [field.attname for field in AuditEntry._meta.concrete_fields]
        rows = queryset.values_list(*fields).iterator(chunk_size=_EXPORT_BLOCK_ROWS)
        blocks = csv_blocks(rows, header=fields)
        response = StreamingHttpResponse(
            _async_blocks(blocks) if isinstance(request, ASGIRequest) else blocks,
            content_type="text/csv; charset=utf-8",
        )
        filename = f"audit-{timezone.now():%Y%m%d-%H%M%S}.csv"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


# --- Configuration history -----------------------------------------------------------------------

# Bookkeeping that changes with every save (or with use) and says nothing about the configuration.
_NOT_DIFFED = {"created_at", "updated_at", "last_used_at"}
_ACTIONS = {"+": "created", "~": "changed", "-": "deleted"}


def _show(value: Any) -> str:
    if value is None or value == "":
        return "empty"
    return str(value)


def _names(rows: Iterable[Any], key: str) -> str:
    """Many-to-many rows (dicts from a diff, or history rows) as the related objects' names."""
    names = [str(row[key] if isinstance(row, dict) else getattr(row, key)) for row in rows]
    return ", ".join(sorted(names)) or "none"


class ConfigChangeList(ChangeList):
    """Fetches the previous version of every record on the page in one query, for the diffs."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        records = list(self.result_list)
        wanted = {record._prev_id for record in records if record._prev_id is not None}
        previous = self.model_admin.diff_queryset().in_bulk(wanted)
        for record in records:
            record._prev = previous.get(record._prev_id)


class ConfigChangeAdmin(ReadOnlyAdmin):
    """One page per configuration model: who changed what, when, field by field."""

    date_hierarchy = "history_date"
    list_display = ("history_date", "editor", "action", "object_link", "changes")
    list_filter = (
        "history_type",
        ("history_user", admin.RelatedOnlyFieldListFilter),
        "history_date",
    )
    list_per_page = 50
    readonly_fields = ("changes",)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return ConfigChangeList

    def diff_queryset(self) -> QuerySet[Any]:
        """Records with what the diff reads (editor, related objects) already joined."""
        model = self.model
        related = [f.name for f in model.tracked_fields if isinstance(f, models.ForeignKey)]
        return model._default_manager.select_related("history_user", *related)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        earlier = self.model._default_manager.filter(
            id=models.OuterRef("id"), history_date__lt=models.OuterRef("history_date")
        ).order_by("-history_date", "-history_id")
        return self.diff_queryset().annotate(
            _prev_id=models.Subquery(earlier.values("history_id")[:1])
        )

    @admin.display(description="changed by", ordering="history_user__username")
    def editor(self, record: Any) -> str:
        return record.history_user.get_username() if record.history_user else "-"

    @admin.display(description="action", ordering="history_type")
    def action(self, record: Any) -> str:
        return _ACTIONS.get(record.history_type, record.history_type)

    @admin.display(description="object")
    def object_link(self, record: Any) -> str:
        """The object as it was, linking to all of its changes."""
        changelist = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
        return format_html(
            '<a href="{}?id={}">{}</a>', changelist, record.id, self.object_label(record)
        )

    def object_label(self, record: Any) -> str:
        return str(record.history_object)

    @admin.display(description="changes")
    def changes(self, record: Any) -> str:
        if record.history_type == "-":
            return "deleted"
        if record.history_type == "+":
            lines = list(self._values(record))
        else:
            # The changelist fetched it with its page; the detail page asks for its one record.
            previous = record._prev if hasattr(record, "_prev") else record.prev_record
            if previous is None:
                return "-"
            lines = [(name, f"{old} → {new}") for name, old, new in self._diff(record, previous)]
        if not lines:
            return "no field changed"
        return format_html(
            '<ul style="margin:0;padding:0;list-style:none">{}</ul>',
            format_html_join("", "<li><b>{}</b>: {}</li>", lines),
        )

    def _diff(self, record: Any, previous: Any) -> list[tuple[str, str, str]]:
        """(field, old, new) for every field that differs from the previous version."""
        editable = [f.name for f in record.tracked_fields if f.editable]
        m2m = {f.name: f.m2m_reverse_field_name() for f in record._history_m2m_fields}
        delta = record.diff_against(
            previous,
            included_fields=[*editable, *m2m],
            excluded_fields=_NOT_DIFFED,
            foreign_keys_are_objs=True,
        )
        changes = [
            (c.field, _names(c.old, m2m[c.field]), _names(c.new, m2m[c.field]))
            if c.field in m2m
            else (c.field, _show(c.old), _show(c.new))
            for c in delta.changes
        ]
        # diff_against compares form fields only; a revocation (revoked_at) is not one.
        for field in record.tracked_fields:
            if field.editable or field.name in _NOT_DIFFED:
                continue
            old, new = getattr(previous, field.attname), getattr(record, field.attname)
            if old != new:
                changes.append((field.name, _show(old), _show(new)))
        return sorted(changes)

    def _values(self, record: Any) -> Iterator[tuple[str, str]]:
        """A created object's fields, the empty ones left out."""
        for field in record.tracked_fields:
            if field.name in _NOT_DIFFED or field.primary_key:
                continue
            value = getattr(record, field.attname)
            if isinstance(field, models.ForeignKey) and value is not None:
                try:
                    value = getattr(record, field.name) or f"deleted #{value}"
                except ObjectDoesNotExist:
                    value = f"deleted #{value}"
            if value not in (None, "", {}):
                yield field.name, str(value)
        for field in record._history_m2m_fields:
            key = field.m2m_reverse_field_name()
            rows = getattr(record, field.name).select_related(key)
            if rows:
                yield field.name, _names(rows, key)

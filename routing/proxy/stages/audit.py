"""Audit: the row of a request to an audited route, written fail-closed.

A request to an audited route (admin-only policy, or the route's audit flag) gets exactly one row:

- allowed: the row is inserted (committed) *before* the upstream is called, so a request that
  could not be recorded is never forwarded; once the answer is sent, the same row is completed
  with the status, upstream status, latency and bytes;
- denied (401, 403, 429...): the row is inserted before the error is sent.

A request a report-only policy or tier would have refused is forwarded, so its row says
"allowed", with the reason `would_deny:policy` (or `:limit`): what enforcing would have done.

If the database cannot take the row, the request ends with 503 audit_unavailable instead, within
PORTIER_AUDIT_WRITE_TIMEOUT seconds: a locked or unreachable database must not hold the request
(or a worker thread) for the driver's own timeouts. The write is awaited for at most that long,
and the connection doing it is told the same bound (SQLite's busy timeout, PostgreSQL's
statement and lock timeouts), so its thread gives up too. A row that lands after the request was
already refused is marked as refused (503), so the trail never shows it as forwarded.
The row never holds a token, cookie, password or API key: only the caller's id, email, roles and
key prefix, and the query with secret-looking parameters redacted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection

from audit.models import AuditEntry
from routing.observe.redaction import redact_path, redact_query
from routing.proxy.context import GatewayError, RequestContext

__all__ = ["audit_close", "audit_close_soon", "audit_deny", "audit_open", "is_audited"]

logger = logging.getLogger("portier.audit")

_UNAVAILABLE = GatewayError(
    503, "audit_unavailable", "The request could not be recorded; try again shortly."
)


def is_audited(ctx: RequestContext) -> bool:
    route = ctx.route
    if route is None:
        return False
    return route.audit or (route.policy is not None and route.policy.kind == "admin_only")


def _fields(ctx: RequestContext) -> dict[str, Any]:
    identity = ctx.identity
    route = ctx.route
    agent = ctx.header(b"user-agent") or b""
    return {
        "request_id": ctx.request_id,
        "auth_method": identity.method if identity else "",
        "caller_id": identity.subject if identity else "",
        "caller_email": identity.email if identity else "",
        "key_prefix": identity.key_prefix if identity else "",
        "roles": ",".join(sorted(identity.roles)) if identity else "",
        "client_ip": ctx.client_ip or None,
        "method": ctx.method,
        "path": redact_path(ctx.path),
        "query": redact_query(ctx.query_string),
        "route": route.name if route else "",
        "service": route.service.name if route else "",
        "user_agent": agent.decode("latin-1")[:512],
    }


def _report_only_reason(ctx: RequestContext) -> str:
    return f"would_deny:{ctx.would_deny}" if ctx.would_deny else ""


async def audit_open(ctx: RequestContext) -> None:
    """Insert the allowed row before forwarding; 503 audit_unavailable when it cannot be."""
    if not is_audited(ctx):
        return
    fields = {
        **_fields(ctx),
        "outcome": AuditEntry.Outcome.ALLOWED,
        "reason": _report_only_reason(ctx),
    }
    try:
        ctx.audit_id = await _bounded_insert(fields)
    except Exception:
        logger.exception("audit row could not be written; request %s refused", ctx.request_id)
        raise _UNAVAILABLE from None


async def audit_deny(ctx: RequestContext, exc: GatewayError) -> GatewayError:
    """Record a denied (or failed) request; the error to answer with (503 if unrecorded).

    A request whose allowed row is already written keeps that one row: its close says how it
    ended."""
    if ctx.audit_id is not None or not is_audited(ctx) or exc is _UNAVAILABLE:
        return exc  # (the database just failed this request's row: do not wait on it twice)
    fields = {
        **_fields(ctx),
        "outcome": AuditEntry.Outcome.DENIED,
        "reason": exc.code,
        "status": exc.status,
        "latency_ms": (time.perf_counter() - ctx.started) * 1000,
    }
    try:
        ctx.audit_id = await _bounded_insert(fields)
    except Exception:
        logger.exception("audit row could not be written; request %s refused", ctx.request_id)
        return _UNAVAILABLE
    ctx.audit_closed = True  # a denial's row is complete as written
    return exc


async def audit_close(ctx: RequestContext, error_code: str | None) -> None:
    """Complete the allowed row once the answer is sent (the row itself is already safe)."""
    if ctx.audit_id is None or ctx.audit_closed:
        return
    ctx.audit_closed = True
    fields = {
        "status": ctx.status,
        "upstream_status": ctx.upstream_status,
        "reason": error_code or _report_only_reason(ctx),
        "target": ctx.target_url,
        "latency_ms": (time.perf_counter() - ctx.started) * 1000,
        "bytes_in": ctx.bytes_in,
        "bytes_out": ctx.bytes_out,
    }
    try:
        await asyncio.wait_for(
            sync_to_async(_update, thread_sensitive=False)(ctx.audit_id, fields),
            settings.PORTIER_AUDIT_WRITE_TIMEOUT,
        )
    except Exception:
        logger.exception("audit row %s could not be completed", ctx.audit_id)


def audit_close_soon(ctx: RequestContext, error_code: str) -> None:
    """Complete the allowed row of a request cancelled before its answer (a shutdown cutting
    it), in a task of its own: the cancelled one can await nothing more. Best effort, as the
    loop may be ending; the row itself is already safe."""
    if ctx.audit_id is None or ctx.audit_closed:
        return
    ctx.status = ctx.status or 499
    task = asyncio.ensure_future(audit_close(ctx, error_code))
    _late_fixes.add(task)
    task.add_done_callback(_late_fixes.discard)


async def _bounded_insert(fields: dict[str, Any]) -> int:
    """The new row's id, or an exception; TimeoutError after PORTIER_AUDIT_WRITE_TIMEOUT."""
    write = asyncio.ensure_future(sync_to_async(_insert, thread_sensitive=False)(fields))
    try:
        return await asyncio.wait_for(asyncio.shield(write), settings.PORTIER_AUDIT_WRITE_TIMEOUT)
    except BaseException:  # timed out, or cancelled (a shutdown cutting the request)
        write.add_done_callback(_refused_late)
        raise


def _refused_late(write: asyncio.Future[int]) -> None:
    """The insert finished after its request was refused: say so in the row."""
    if write.cancelled() or write.exception() is not None:
        return
    fields = {"outcome": AuditEntry.Outcome.DENIED, "status": 503, "reason": _UNAVAILABLE.code}
    fix = asyncio.ensure_future(_update_quietly(write.result(), fields))
    _late_fixes.add(fix)  # a reference until it is done: the loop keeps only weak ones
    fix.add_done_callback(_late_fixes.discard)


_late_fixes: set[asyncio.Future[None]] = set()


async def _update_quietly(pk: int, fields: dict[str, Any]) -> None:
    try:
        await sync_to_async(_update, thread_sensitive=False)(pk, fields)
    except Exception:
        logger.exception("audit row %s written late could not be marked as refused", pk)


def _insert(fields: dict[str, Any]) -> int:
    _prepare_connection()
    return AuditEntry.objects.create(**fields).pk


def _update(pk: int, fields: dict[str, Any]) -> None:
    _prepare_connection()
    AuditEntry.objects.filter(pk=pk).update(**fields)


def _prepare_connection() -> None:
    """Worker threads live outside Django's request cycle: apply its connection hygiene here, so
    a connection broken by a database restart is replaced instead of failing every request. A new
    connection is then told to give up waiting (for a lock or a statement) after the audit
    timeout, once per connection, so the thread is not held longer than its request."""
    close_old_connections()
    connection.ensure_connection()
    raw = connection.connection
    if getattr(connection, "_portier_bounded", None) is raw:
        return
    milliseconds = max(1, int(settings.PORTIER_AUDIT_WRITE_TIMEOUT * 1000))
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"PRAGMA busy_timeout = {milliseconds}")
        elif connection.vendor == "postgresql":
            cursor.execute(f"SET statement_timeout = {milliseconds}")
            cursor.execute(f"SET lock_timeout = {milliseconds}")
    connection._portier_bounded = raw  # type: ignore[attr-defined]

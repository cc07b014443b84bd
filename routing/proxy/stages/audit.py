"""Audit: the row of a request to an audited route, written fail-closed.

A request to an audited route (admin-only policy, or the route's audit flag) gets exactly one row:

- allowed: the row is inserted (committed) *before* the upstream is called, so a request that
  could not be recorded is never forwarded; once the answer is sent, the same row is completed
  with the status, upstream status, latency and bytes;
- denied (401, 403, 429...): the row is inserted before the error is sent.

If the database cannot take the row, the request ends with 503 audit_unavailable instead.
The row never holds a token, cookie, password or API key: only the caller's id, email, roles and
key prefix, and the query with secret-looking parameters redacted.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from audit.models import AuditEntry
from routing.observe.redaction import redact_query
from routing.proxy.context import GatewayError, RequestContext

__all__ = ["audit_close", "audit_deny", "audit_open", "is_audited"]

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
        "path": ctx.path,
        "query": redact_query(ctx.query_string),
        "route": route.name if route else "",
        "service": route.service.name if route else "",
        "user_agent": agent.decode("latin-1")[:512],
    }


async def audit_open(ctx: RequestContext) -> None:
    """Insert the allowed row before forwarding; 503 audit_unavailable when it cannot be."""
    if not is_audited(ctx):
        return
    fields = {**_fields(ctx), "outcome": AuditEntry.Outcome.ALLOWED}
    try:
        ctx.audit_id = await sync_to_async(_insert, thread_sensitive=False)(fields)
    except Exception:
        logger.exception("audit row could not be written; request %s refused", ctx.request_id)
        raise _UNAVAILABLE from None


async def audit_deny(ctx: RequestContext, exc: GatewayError) -> GatewayError:
    """Record a denied (or failed) request; the error to answer with (503 if unrecorded).

    A request whose allowed row is already written keeps that one row: its close says how it
    ended."""
    if ctx.audit_id is not None or not is_audited(ctx):
        return exc
    fields = {
        **_fields(ctx),
        "outcome": AuditEntry.Outcome.DENIED,
        "reason": exc.code,
        "status": exc.status,
        "latency_ms": (time.perf_counter() - ctx.started) * 1000,
    }
    try:
        ctx.audit_id = await sync_to_async(_insert, thread_sensitive=False)(fields)
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
        "reason": error_code or "",
        "target": ctx.target_url,
        "latency_ms": (time.perf_counter() - ctx.started) * 1000,
        "bytes_in": ctx.bytes_in,
        "bytes_out": ctx.bytes_out,
    }
    try:
        await sync_to_async(_update, thread_sensitive=False)(ctx.audit_id, fields)
    except Exception:
        logger.exception("audit row %s could not be completed", ctx.audit_id)


def _insert(fields: dict[str, Any]) -> int:
    # Worker threads live outside Django's request cycle: apply its connection hygiene here, so
    # a connection broken by a database restart is replaced instead of failing every request.
    close_old_connections()
    return AuditEntry.objects.create(**fields).pk


def _update(pk: int, fields: dict[str, Any]) -> None:
    close_old_connections()
    AuditEntry.objects.filter(pk=pk).update(**fields)

"""The access log: one record per request on `portier.access`, written after the answer was sent.

The record's message is a dict, so the JSON formatter (gateway_site.logs) writes its fields as
one object per line and the console formatter as key=value. Formatting and writing happen in the
log thread; here the fields are only gathered. Who called is told by user id, API key prefix and
auth method: never a header value, token, key, cookie or password. Secret-looking query and
matrix (`;jsessionid=`) parameters are redacted by routing.observe.redaction, as in the audit
log and traces.
"""

from __future__ import annotations

import logging

from routing.observe.redaction import redact_path, redact_query
from routing.proxy.context import RequestContext

__all__ = ["request_finished"]

logger = logging.getLogger("portier.access")


def request_finished(ctx: RequestContext, error_code: str | None, elapsed: float) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    route = ctx.route
    identity = ctx.identity
    path = redact_path(ctx.path or ctx.raw_path.decode("latin-1"))  # empty when refused
    if ctx.query_string:
        path = f"{path}?{redact_query(ctx.query_string)}"
    fields = {
        "request_id": ctx.request_id,
        "trace_id": ctx.trace_id,
        "span_id": ctx.span_id,
        "route": route.name if route else None,
        "service": route.service.name if route else None,
        "target": ctx.target_url or None,
        "method": ctx.method,
        "path": path,
        "status": ctx.status,
        "outcome": error_code or "ok",
        "latency_ms": round(elapsed * 1000, 2),
        "upstream_ms": round(ctx.upstream_seconds * 1000, 2) if ctx.target else None,
        "bytes_in": ctx.bytes_in,
        "bytes_out": ctx.bytes_out,
        "user_id": identity.subject if identity else None,
        "key_prefix": (identity.key_prefix or None) if identity else None,
        "auth_method": identity.method if identity else None,
        "client_ip": ctx.client_ip or None,
        "cache": ctx.cache_result or None,  # HIT, MISS, BYPASS, STALE on a caching route
    }
    if ctx.would_deny:
        # Only on the rare lines that have it: every other line keeps its shape.
        fields["would_deny"] = ctx.would_deny  # "policy" or "limit": report-only, served
    logger.info(fields)

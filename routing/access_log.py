"""The access log: one line per request, written after the answer was sent."""

from __future__ import annotations

import logging
import time

from routing.context import RequestContext

__all__ = ["request_finished"]

logger = logging.getLogger("portier.access")


def request_finished(ctx: RequestContext, error_code: str | None) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    route = ctx.route
    logger.info(
        "request_id=%s method=%s path=%s route=%s service=%s target=%s status=%s "
        "outcome=%s bytes_out=%d latency_ms=%.1f upstream_ms=%.1f client=%s",
        ctx.request_id,
        ctx.method,
        ctx.path or "-",
        route.name if route else "-",
        route.service.name if route else "-",
        ctx.target_url or "-",
        ctx.status,
        error_code or "ok",
        ctx.bytes_out,
        (time.perf_counter() - ctx.started) * 1000,
        ctx.upstream_seconds * 1000,
        ctx.client_ip or "-",
    )

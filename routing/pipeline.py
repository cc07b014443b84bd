"""The request pipeline: a fixed loop over small stages, then forwarding.

Each stage reads and fills the shared RequestContext and may end the request by raising
GatewayError. A crashing stage becomes a 500 with the standard body; recording still happens in
the entry once the answer is sent. Later stages (rate limits, audit) slot into STAGES. Every
request first joins or starts a W3C trace (routing.tracing); with OpenTelemetry on, the stages
and the upstream call run inside spans.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Awaitable, Callable

from audit.recording import audit_deny, audit_open, is_audited
from routing import tracing
from routing.access import authorize
from routing.context import ClientGone, GatewayError, GatewayResponse, RequestContext
from routing.errors import error_response
from routing.forward import forward
from routing.identity import authenticate
from routing.limits import limit
from routing.matching import match
from routing.transform import check_framing, transform

__all__ = ["STAGES", "request_id_from", "run"]

logger = logging.getLogger("portier.pipeline")

Stage = Callable[[RequestContext], Awaitable[None]]
STAGES: tuple[Stage, ...] = (check_framing, match, authenticate, authorize, limit, transform)

_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")


def request_id_from(value: bytes | None) -> str:
    """The client's X-Request-ID when it is short and safe to log and echo, else a new one."""
    if value is not None and _SANE_REQUEST_ID.fullmatch(value):
        return value.decode("ascii")
    return os.urandom(16).hex()  # as random as uuid4().hex, without building a UUID


async def run(ctx: RequestContext) -> GatewayResponse:
    tracing.begin(ctx)
    spans = tracing.otel()
    if spans is None:
        return await _run(ctx, STAGES, forward)
    # The server span ends with the answer's headers; a streamed body outlasts it.
    with spans.request_span(ctx):
        return await _run(ctx, spans.stages(STAGES), spans.forward(forward))


async def _run(
    ctx: RequestContext,
    stages: tuple[Stage, ...],
    send: Callable[[RequestContext], Awaitable[GatewayResponse]],
) -> GatewayResponse:
    try:
        for stage in stages:
            await stage(ctx)
        if is_audited(ctx):
            await audit_open(ctx)  # committed before the upstream is called, or 503
        response = await send(ctx)
    except GatewayError as exc:
        response = await _error(ctx, exc)
    except ClientGone:
        # Nobody will read this answer; it is built so the request is recorded like any other.
        response = await _error(
            ctx, GatewayError(499, "client_closed_request", "The client closed the request.")
        )
    except Exception:
        logger.exception(
            "pipeline failed for request %s",
            ctx.request_id,
            extra={"request_id": ctx.request_id, "trace_id": ctx.trace_id},
        )
        response = await _error(
            ctx, GatewayError(500, "internal_error", "The gateway failed to handle the request.")
        )
    ctx.status = response.status
    return response


async def _error(ctx: RequestContext, exc: GatewayError) -> GatewayResponse:
    if ctx.audit_id is None and is_audited(ctx):
        exc = await audit_deny(ctx, exc)  # one row for the denial, or 503 if it cannot be written
    return error_response(exc, ctx.request_id, ctx.response_headers)

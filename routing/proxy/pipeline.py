"""The request's whole life, in order: the one place that says what runs when.

    before      framing, match, admit (IP lists, HTTPS redirect, CORS preflight),
                authenticate, authorize, limit, transform, open the audit row
    forward     the shared response cache answers (a caching route's GET/HEAD), or one
                target of the route's service does (retries, budget, circuit); a composite
                route's backends are called and merged instead (routing.proxy.aggregate)
    on the way  dress the answer: response transform, security and CORS headers, compression
    after       finish: release the upstream, close the audit row, record metrics and the log
    on error    a stage's GatewayError (or a crash, as 500) becomes the standard error body,
                with the audit row of a denial written first; a stage's Answered (a preflight,
                a redirect) is sent as it is

Each stage is a small async function over the shared RequestContext (routing.proxy.context) that
may end the request by raising GatewayError. The two entries (routing.proxy.asgi_entry, the
served stack, and routing.proxy.django_entry, Django's own handler) only translate to the
context and back: both call `run`, send the answer, then `finish`. Every request first joins or
starts a W3C trace; with OpenTelemetry on, the stages and the upstream call run inside spans.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from routing.observe import tracing
from routing.proxy.aggregate import forward_composite
from routing.proxy.context import (
    Answered,
    ClientGone,
    GatewayError,
    GatewayResponse,
    RequestContext,
)
from routing.proxy.errors import error_response
from routing.proxy.stages import record
from routing.proxy.stages.access import authorize
from routing.proxy.stages.admission import admit
from routing.proxy.stages.answer import dress
from routing.proxy.stages.audit import audit_close, audit_close_soon, audit_deny, audit_open
from routing.proxy.stages.cache import forward_cached
from routing.proxy.stages.framing import check_framing
from routing.proxy.stages.identity import authenticate
from routing.proxy.stages.limits import limit
from routing.proxy.stages.match import match
from routing.proxy.stages.transform import transform

__all__ = ["BEFORE", "finish", "run"]

logger = logging.getLogger("portier.pipeline")

Stage = Callable[[RequestContext], Awaitable[None]]
# Before forwarding, in order. The audit row is committed before the upstream is called, or 503.
BEFORE: tuple[Stage, ...] = (
    check_framing,
    match,
    admit,
    authenticate,
    authorize,
    limit,
    transform,
    audit_open,
)


async def run(ctx: RequestContext) -> GatewayResponse:
    """The answer to send: the upstream's (its body still streaming) or an error body.

    Raises only when cancelled. A fixed answer is known whole, so its audit row is completed
    before it is sent.
    """
    record.started()
    try:
        tracing.begin(ctx)
        spans = tracing.otel()
        if spans is None:
            response = await _respond(ctx, BEFORE, forward_cached)
        else:
            # The server span ends with the answer's headers; a streamed body outlasts it.
            with spans.request_span(ctx):
                response = await _respond(ctx, spans.stages(BEFORE), spans.forward(forward_cached))
        if response.stream is None:
            await audit_close(ctx, response.error_code)
    except BaseException:  # cancelled (the server is cutting it): there is nothing to finish
        record.abandoned()
        audit_close_soon(ctx, "client_closed_request")
        raise
    return response


async def finish(ctx: RequestContext, response: GatewayResponse) -> None:
    """After the answer was sent, or given up on: let the upstream go, complete the audit row,
    record what happened. Each entry calls it exactly once per `run`, whatever happened."""
    try:
        if response.close is not None:
            await response.close()
    finally:
        await audit_close(ctx, response.error_code)
        record.record(ctx, response.error_code)


async def _respond(
    ctx: RequestContext,
    stages: tuple[Stage, ...],
    send: Callable[[RequestContext], Awaitable[GatewayResponse]],
) -> GatewayResponse:
    try:
        for stage in stages:
            await stage(ctx)
        route = ctx.route
        if route is not None and route.composite is not None:
            response = await forward_composite(ctx)
        else:
            response = await send(ctx)
    except Answered as answered:
        response = answered.response
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
    response = dress(ctx, response)
    ctx.status = response.status
    return response


async def _error(ctx: RequestContext, exc: GatewayError) -> GatewayResponse:
    exc = await audit_deny(ctx, exc)  # one row for an audited denial, or 503 unrecorded
    return error_response(exc, ctx.request_id, ctx.response_headers)

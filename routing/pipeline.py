"""The request pipeline: a fixed loop over small stages, then forwarding.

Each stage reads and fills the shared RequestContext and may end the request by raising
GatewayError. A crashing stage becomes a 500 with the standard body; recording still happens in
the entry once the answer is sent. Later stages (rate limits, audit) slot into STAGES.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Awaitable, Callable

from routing.access import authorize
from routing.context import GatewayError, GatewayResponse, RequestContext
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
    try:
        for stage in STAGES:
            await stage(ctx)
        response = await forward(ctx)
    except GatewayError as exc:
        response = error_response(exc, ctx.request_id, ctx.response_headers)
    except Exception:
        logger.exception("pipeline failed for request %s", ctx.request_id)
        response = error_response(
            GatewayError(500, "internal_error", "The gateway failed to handle the request."),
            ctx.request_id,
            ctx.response_headers,
        )
    ctx.status = response.status
    return response

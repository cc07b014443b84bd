"""Per-route traffic summary for the admin index (placeholder: being written)."""

from __future__ import annotations

from routing.context import RequestContext


def request_finished(ctx: RequestContext, error_code: str | None) -> None:
    return None

"""Composite routes: one request, several services called, their JSON merged into one answer.

(Placeholder for the composite-routes work: validation of a route's `backends` and its compiled
form. Until it lands a route with backends is refused by the compiler.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CompositeSpec", "compile_composite"]


@dataclass(frozen=True, slots=True)
class CompositeSpec:
    """A composite route's backends, compiled."""


def compile_composite(backends: Any) -> CompositeSpec | None:
    if not backends:
        return None
    raise ValueError("composite routes are not supported yet")

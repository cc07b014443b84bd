"""Secrets kept out of what the gateway writes down: the access log and the audit trail."""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

__all__ = ["redact_query"]

_SECRET_NAME = re.compile(
    r"pass|pwd|secret|token|api[-_]?key|apikey|^key$|auth|signature|^sig$|session|credential|"
    r"^code$",
    re.IGNORECASE,
)


def redact_query(query: bytes) -> str:
    """The query string as sent, with the values of secret-looking parameters replaced."""
    if not query:
        return ""
    parts = []
    for part in query.decode("latin-1").split("&"):
        name, eq, _value = part.partition("=")
        if eq and _SECRET_NAME.search(unquote_plus(name)):
            parts.append(f"{name}=[REDACTED]")
        else:
            parts.append(part)
    return "&".join(parts)

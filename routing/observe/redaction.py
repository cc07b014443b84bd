"""Secrets kept out of what the gateway writes down: the access log, the audit trail, traces.

The one place that decides what looks secret. A parameter is secret by its name (compared in
lower case after percent-decoding, so `Token`, `%74oken`, `user[password]` and `X-Amz-Signature`
all count) or by its value when it looks like a JWT, whatever it is called. `;` separates
parameters as well as `&` (some servers split on it), so `?x=1;token=t` hides `t`.

No record holds a cookie or any other request header's value: the access log and audit rows
name the caller by id and key prefix, and spans carry the method, path and route only.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

__all__ = ["REDACTED", "redact_path", "redact_query"]

REDACTED = "[REDACTED]"

# Matched against the lower-cased, percent-decoded name. Substrings first (cheap to reject),
# the anchored names last: `key` alone or after a separator, never `monkey`.
_SECRET_NAME = re.compile(
    r"pass|pwd|secret|token|jwt|bearer|auth|signature|session|sessid|credential|otp|assertion|"
    r"saml|ticket|csrf|xsrf|hmac|api[-_.]?key|(?:^|[-_.]|access|private|client|app)key$|"
    r"^(?:sig|sid|code)$"
)
# header.payload.signature, base64url: a bearer token whatever the parameter is called.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.")
_SEPARATOR = re.compile(r"([&;])")  # kept in the split: parts at even, separators at odd places


def redact_query(query: bytes) -> str:
    """The query string as sent, with the values of secret-looking parameters replaced."""
    if not query:
        return ""
    parts = _SEPARATOR.split(query.decode("latin-1"))
    parts[::2] = [_redact_part(part) for part in parts[::2]]
    return "".join(parts)


def redact_path(path: str) -> str:
    """The path with the values of secret-looking matrix parameters (`;jsessionid=...`)
    replaced: servlet containers put the session id there when cookies are off."""
    if ";" not in path:
        return path
    return "/".join(_redact_segment(segment) for segment in path.split("/"))


def _redact_part(part: str) -> str:
    name, eq, value = part.partition("=")
    if eq:
        if _is_secret_name(name) or _looks_like_jwt(value):
            return f"{name}={REDACTED}"
        return part
    return REDACTED if _looks_like_jwt(part) else part  # a bare token: ?eyJ...


def _is_secret_name(name: str) -> bool:
    if "%" in name or "+" in name:
        name = unquote_plus(name)
    return _SECRET_NAME.search(name.lower()) is not None


def _looks_like_jwt(value: str) -> bool:
    # Base64url and "." are unreserved characters: a JWT is never percent-encoded in a URL.
    return "eyJ" in value and _JWT.search(value) is not None


def _redact_segment(segment: str) -> str:
    if ";" not in segment:
        return segment
    head, *params = segment.split(";")
    return ";".join([head, *(_redact_part(param) for param in params)])

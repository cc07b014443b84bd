"""Path normalisation: done once per request, and what is matched is exactly what is forwarded.

A gateway that matches one spelling of a path and forwards another lets a client reach a route it
should not (`/public/../admin`, `/public/%2e%2e/admin`, `/public/..%2Fadmin`). So the raw path is
brought to one normal form before matching, and that form is the one sent upstream:

- percent-encoded unreserved characters (letters, digits, `-._~`) are decoded; every other escape
  is kept, with upper-case hex;
- characters that may not appear in a path are percent-encoded;
- dot-segments are resolved (RFC 3986 5.2.4; `..` never climbs above the root) and runs of
  slashes collapse to one;
- an encoded slash or backslash (`%2F`, `%5C`), a raw backslash, a NUL or a control character is
  refused, because an upstream that decodes them would see a different path than the one matched
  (PORTIER_ALLOW_ENCODED_SLASHES keeps encoded slashes as opaque characters instead);
- bytes beyond ASCII, escaped or raw, must decode as strict UTF-8: an overlong form (`%c0%ae`,
  a dot), a lone continuation byte, a truncated sequence or an encoded surrogate is refused,
  because a lenient decoder behind the gateway may read it as `.` or `/` and resolve a path
  the gateway never matched.

Matching is case-sensitive and `;` is an ordinary character: no matrix-parameter stripping.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from routing.hot_settings import hot_settings

__all__ = ["PathRejected", "is_reserved_path", "normalize_path"]

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# RFC 3986 pchar minus "%" plus "/": characters that may stand unescaped in a path.
_PATH_SAFE = frozenset(_UNRESERVED | frozenset(b"!$&'()*+,;=:@/"))
_ALREADY_NORMAL = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,;=:@/]*")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_SLASHES = (0x2F, 0x5C)


class PathRejected(ValueError):
    """The raw path cannot be given one unambiguous meaning; the request gets 400 invalid_path."""


def is_reserved_path(path: str) -> bool:
    """True for the gateway's own paths (/admin, /api-docs, /health/..., ...), never proxied."""
    for reserved in hot_settings.PORTIER_RESERVED_PATHS:
        if path.startswith(reserved) and (len(path) == len(reserved) or path[len(reserved)] == "/"):
            return True
    return False


def normalize_path(raw: bytes, *, allow_encoded_slashes: bool = False) -> str:
    """Return the normal form of a raw request path (bytes as sent, without the query)."""
    if not raw.startswith(b"/"):
        raise PathRejected("The path must start with /.")
    if b"//" not in raw and b"/." not in raw and _ALREADY_NORMAL.fullmatch(raw):
        return raw.decode("ascii")
    return _resolve_dot_segments(_canonical_escapes(raw, allow_encoded_slashes))


def _canonical_escapes(raw: bytes, allow_encoded_slashes: bool) -> str:
    out: list[str] = []
    beyond_ascii = False
    i, n = 0, len(raw)
    while i < n:
        byte = raw[i]
        if byte == 0x25:  # "%"
            if i + 2 >= n or raw[i + 1] not in _HEX or raw[i + 2] not in _HEX:
                raise PathRejected("The path holds a malformed percent-escape.")
            value = int(raw[i + 1 : i + 3], 16)
            if value in _UNRESERVED:
                out.append(chr(value))
            elif value < 0x20 or value == 0x7F:
                raise PathRejected("The path holds an encoded control character.")
            elif value in _SLASHES and not allow_encoded_slashes:
                raise PathRejected("The path holds an encoded slash or backslash.")
            else:
                beyond_ascii = beyond_ascii or value > 0x7F
                out.append(f"%{value:02X}")
            i += 3
            continue
        if byte < 0x20 or byte == 0x7F:
            raise PathRejected("The path holds a control character.")
        if byte == 0x5C:
            raise PathRejected("The path holds a backslash.")
        beyond_ascii = beyond_ascii or byte > 0x7F
        out.append(chr(byte) if byte in _PATH_SAFE else f"%{byte:02X}")
        i += 1
    path = "".join(out)
    if beyond_ascii:
        try:
            unquote_to_bytes(path).decode("utf-8")  # strict: overlong forms, surrogates refused
        except UnicodeDecodeError:
            raise PathRejected("The path holds bytes that are not valid UTF-8.") from None
    return path


def _resolve_dot_segments(path: str) -> str:
    segments = path.split("/")[1:]
    kept: list[str] = []
    trailing_slash = False
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment in ("", ".", ".."):
            if segment == ".." and kept:
                kept.pop()
            trailing_slash = index == last
            continue
        kept.append(segment)
        trailing_slash = False
    if not kept:
        return "/"
    return "/" + "/".join(kept) + ("/" if trailing_slash else "")

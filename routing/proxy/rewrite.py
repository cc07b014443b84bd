"""Apply a route's compiled transform rules (routing.config.transforms) to one request or answer.

The rules were checked when the configuration was saved; here they only run. A placeholder's
value comes from the request (`placeholder_values`); a header whose rendered value is empty is
not sent, and one holding a character a header cannot carry is not sent either.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus, unquote_to_bytes, urlencode

from routing.config.transforms import FieldRules, HeaderRules, Template
from routing.proxy.context import GatewayError, Headers, RequestContext

__all__ = [
    "is_json",
    "placeholder_values",
    "rewrite_body",
    "rewrite_headers",
    "rewrite_query",
]

_UNSENDABLE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def placeholder_values(ctx: RequestContext) -> Callable[[str], str]:
    """The value of each placeholder for this request ("" for what it lacks)."""

    def value_of(name: str) -> str:
        identity = ctx.identity
        if name == "request_id":
            return ctx.request_id
        if name == "client_ip":
            return ctx.client_ip
        if name == "route":
            return ctx.route.name if ctx.route else ""
        if name.startswith("path."):
            found = ctx.route_match
            if isinstance(found, re.Match):
                return found.groupdict().get(name[5:]) or ""
            return ""
        if identity is None:
            return ""
        if name == "user_id":
            return identity.subject
        if name == "email":
            return identity.email
        if name == "roles":
            return ",".join(sorted(identity.roles))
        return ""

    return value_of


def _render(template: Template, value_of: Callable[[str], str]) -> str:
    literal = template.literal
    return literal if literal is not None else template.render(value_of)


def rewrite_headers(
    headers: Headers, rules: HeaderRules, value_of: Callable[[str], str]
) -> Headers:
    """Headers after remove, rename, set and add (names lower case)."""
    renamed = dict(rules.rename)
    replaced = {name for name, _ in rules.set}
    kept: Headers = []
    for name, value in headers:
        if name in rules.remove:
            continue
        name = renamed.get(name, name)
        if name in replaced:
            continue
        kept.append((name, value))
    for name, template in (*rules.set, *rules.add):
        text = _render(template, value_of)
        if text and not _UNSENDABLE.search(text):
            try:
                kept.append((name, text.encode("latin-1")))
            except UnicodeEncodeError:
                kept.append((name, text.encode("utf-8")))
    return kept


def rewrite_query(query: bytes, rules: FieldRules, value_of: Callable[[str], str]) -> bytes:
    """The query string after the rules (parameters keep their order; set ones go last).

    A parameter no rule names is passed on byte for byte: decoding and encoding it again would
    turn bytes that are not UTF-8 (a signature, a binary token) into U+FFFD and change its
    spelling (`%20` to `+`, `flag` to `flag=`)."""
    renamed = dict(rules.rename)
    replaced = {name for name, _ in rules.set}
    pieces: list[bytes] = []
    for piece in query.split(b"&"):
        if not piece:
            continue
        raw_name, equals, raw_value = piece.partition(b"=")
        # Compared in UTF-8, as a rule's names are written.
        name = unquote_to_bytes(raw_name.replace(b"+", b" ")).decode("utf-8", "replace")
        if name in rules.remove:
            continue
        new = renamed.get(name)
        if new is not None:
            name = new
            piece = quote_plus(new).encode("ascii") + equals + raw_value
        if name in replaced:
            continue
        pieces.append(piece)
    added = [(name, _render(template, value_of)) for name, template in (*rules.set, *rules.add)]
    if added:
        pieces.append(urlencode(added).encode("ascii"))
    return b"&".join(pieces)


def is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


def rewrite_body(body: bytes, rules: FieldRules, value_of: Callable[[str], str]) -> bytes:
    """A JSON object's top-level fields after the rules; 400 invalid_body when it is not one."""
    try:
        document: Any = json.loads(body) if body.strip() else {}
    except (ValueError, RecursionError):
        raise GatewayError(400, "invalid_body", "The request body is not valid JSON.") from None
    if not isinstance(document, dict):
        raise GatewayError(
            400, "invalid_body", "This route transforms the fields of a JSON object body."
        )
    for name in rules.remove:
        document.pop(name, None)
    for old, new in rules.rename:
        if old in document:
            document[new] = document.pop(old)
    for name, value in rules.set:
        document[name] = _render(value, value_of) if isinstance(value, Template) else value
    try:
        # NaN, Infinity and numbers past a double's range (1e400) would go out as `Infinity`,
        # which no JSON parser upstream accepts.
        text = json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        raise GatewayError(
            400, "invalid_body", "The request body holds a number JSON cannot carry."
        ) from None
    return text.encode("utf-8")

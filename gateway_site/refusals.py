"""What the served protocol (gateway_site.protocol) refuses before any application sees a
request, and the bytes of its answers: rules over a parsed head, no connection state.

RFC 9112 asks a server to refuse a request line without a version, and a request without
exactly one Host header (3.2); a proxy that forwarded a Transfer-Encoding it does not apply
(`gzip, chunked` decoded as plain chunks) would hand its upstream a different body than the
client sent, so anything but one final `chunked` is refused as not implemented, as NGINX does.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle

from routing.proxy.errors import error_body
from routing.proxy.paths import is_reserved_path

__all__ = [
    "HEADERS_TOO_LARGE",
    "PAYLOAD_TOO_LARGE",
    "UNPARSABLE",
    "UNSUPPORTED_CODING",
    "URI_TOO_LONG",
    "HeadVerdict",
    "LingeringClose",
    "Refusal",
    "error_answer",
    "is_own_path",
    "judge_head",
]

Refusal = tuple[int, str, str]  # status, code, message

UNPARSABLE: Refusal = (400, "bad_request", "The request could not be parsed as HTTP/1.1.")
NO_VERSION: Refusal = (
    400,
    "bad_request",
    "The request line must end with HTTP/1.0 or HTTP/1.1.",
)
HOSTS: Refusal = (400, "bad_request", "The request must have exactly one Host header.")
UNSUPPORTED_CODING: Refusal = (
    501,
    "unsupported_transfer_encoding",
    "Only Transfer-Encoding: chunked (alone, once) is supported.",
)
URI_TOO_LONG: Refusal = (414, "uri_too_long", "The request URL is too long.")
HEADERS_TOO_LARGE: Refusal = (
    431,
    "headers_too_large",
    "The request headers are too large or too many.",
)
PAYLOAD_TOO_LARGE: Refusal = (413, "payload_too_large", "The request body is too large.")

_VERSIONS = frozenset({"1.0", "1.1"})


@dataclass(frozen=True, slots=True)
class HeadVerdict:
    refusal: Refusal | None
    has_body: bool = False
    length: int | None = None  # the declared Content-Length; None for a chunked body


def judge_head(version: str, headers: list[tuple[bytes, bytes]]) -> HeadVerdict:
    """A complete head as httptools parsed it (lower-case names): refused, or what body follows.

    Content-Length with Transfer-Encoding, and bad or conflicting lengths, httptools refuses
    itself."""
    if version not in _VERSIONS:  # "0.9": a bare `GET /path` line
        return HeadVerdict(NO_VERSION)
    hosts = 0
    codings: list[bytes] = []
    length: bytes | None = None
    for name, value in headers:
        if name == b"host":
            hosts += 1
        elif name == b"transfer-encoding":
            codings.append(value)
        elif name == b"content-length":
            length = value.strip()
    if hosts > 1 or (hosts == 0 and version == "1.1"):
        return HeadVerdict(HOSTS)
    if codings:
        if len(codings) > 1 or codings[0].strip().lower() != b"chunked":
            return HeadVerdict(UNSUPPORTED_CODING)
        return HeadVerdict(None, has_body=True)
    if length is not None and length.isdigit() and int(length) > 0:
        return HeadVerdict(None, has_body=True, length=int(length))
    return HeadVerdict(None)


def is_own_path(url: bytes) -> bool:
    """Whether gateway_site.asgi hands this request target to Django (its path decoded as
    uvicorn decodes it)."""
    try:
        raw = httptools.parse_url(url).path or b""
    except httptools.HttpParserInvalidURLError:
        return False
    path = raw.decode("latin-1")
    return is_reserved_path(urllib.parse.unquote(path) if "%" in path else path)


def error_answer(
    status: int,
    code: str,
    message: str,
    request_id: str,
    default_headers: list[tuple[bytes, bytes]],
) -> bytes:
    """A whole answer in the gateway's error shape (routing.proxy.errors), ending the
    connection."""
    body = error_body(code, message, request_id)
    lines = [STATUS_LINE[status]]
    headers = [
        *default_headers,
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-request-id", request_id.encode()),
        (b"connection", b"close"),
    ]
    for name, value in headers:
        lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


class LingeringClose:
    """The connection as one request's cycle sees it. uvicorn closes it after an answer with
    `Connection: close`; if the request's body is still arriving then (a 413 answered before
    the body was read), `linger` is called instead, so the unread bytes do not turn the close
    into a reset that destroys the answer."""

    __slots__ = ("cycle", "linger", "transport")

    def __init__(self, cycle: RequestResponseCycle, linger: Callable[[bytes], None]) -> None:
        self.cycle = cycle
        self.linger = linger
        self.transport = cycle.transport

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        if self.cycle.more_body and not self.cycle.disconnected:
            self.linger(b"")
        else:
            self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)

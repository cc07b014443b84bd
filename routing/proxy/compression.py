"""Answer compression: brotli or gzip of a compressible answer the upstream left uncompressed.

Streamed: each upstream chunk is compressed as it arrives and whatever the encoder gives back
is sent, so a large answer is never held whole. Skipped for answers that are already encoded,
carry no body (HEAD, 204, 304), are partial (206), are event streams (each event must leave
at once), declare a Content-Length under the minimum, or are not a compressible type. A
compressed answer loses its Content-Length (it is sent chunked) and its ETag becomes weak, as
NGINX does: the bytes differ from the upstream's. Every answer that would be compressed for a
client that takes it says `Vary: Accept-Encoding`, compressed for this client or not (NGINX's
`gzip_vary`): a shared cache in front must not hand the plain copy to a client that takes gzip,
nor the gzip copy to one that does not.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

import brotli

from routing.proxy.context import Headers

__all__ = ["chosen_encoding", "compressed", "compressed_headers", "compressible", "varied"]

_TYPES = (
    b"text/",
    b"application/json",
    b"application/javascript",
    b"application/xml",
    b"application/x-www-form-urlencoded",
    b"application/graphql",
    b"image/svg+xml",
)
_SUFFIXES = (b"+json", b"+xml")
_NO_BODY = frozenset({204, 206, 304})
_BROTLI_QUALITY = 4  # the speed of gzip level 6 with a better ratio
_GZIP_LEVEL = 6


def chosen_encoding(accept_encoding: bytes | None) -> bytes | None:
    """`br` or `gzip` when the client accepts it (q above 0), brotli preferred; else None."""
    if not accept_encoding:
        return None
    accepted: dict[bytes, float] = {}
    for item in accept_encoding.lower().split(b","):
        coding, _, params = item.strip().partition(b";")
        quality = 1.0
        params = params.strip()
        if params.startswith(b"q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        accepted[coding.strip()] = quality
    for coding in (b"br", b"gzip"):
        if accepted.get(coding, accepted.get(b"*", 0.0)) > 0:
            return coding
    return None


def compressible(status: int, method: str, headers: Headers, min_bytes: int) -> bool:
    if method == "HEAD" or status in _NO_BODY or status < 200:
        return False
    content_type = b""
    for name, value in headers:
        if name == b"content-encoding":
            if value.strip().lower() not in (b"", b"identity"):
                return False
        elif name == b"content-length":
            if not value.strip().isdigit() or int(value) < min_bytes:
                return False
        elif name == b"content-type":
            content_type = value.split(b";", 1)[0].strip().lower()
        elif name == b"cache-control" and b"no-transform" in value.lower():
            return False
    if content_type == b"text/event-stream":
        return False
    return content_type.startswith(_TYPES) or content_type.endswith(_SUFFIXES)


def compressed_headers(headers: Headers, encoding: bytes) -> Headers:
    """The answer's headers once its body is encoded."""
    kept: Headers = []
    for name, value in headers:
        if name == b"content-length":
            continue
        if name == b"etag" and not value.startswith(b"W/"):
            value = b"W/" + value
        kept.append((name, value))
    kept.append((b"content-encoding", encoding))
    return varied(kept)


def varied(headers: Headers) -> Headers:
    """The headers with a Vary that names Accept-Encoding (unless one does already, or says
    `*`): the answer's bytes depend on it."""
    for name, value in headers:
        if name == b"vary":
            names = {item.strip().lower() for item in value.split(b",")}
            if b"accept-encoding" in names or b"*" in names:
                return headers
    return [*headers, (b"vary", b"Accept-Encoding")]


async def compressed(chunks: AsyncIterator[bytes], encoding: bytes) -> AsyncIterator[bytes]:
    if encoding == b"br":
        encoder = brotli.Compressor(quality=_BROTLI_QUALITY)
        async for chunk in chunks:
            out = encoder.process(chunk)
            if out:
                yield out
        yield encoder.finish()
        return
    gzip = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    async for chunk in chunks:
        out = gzip.compress(chunk)
        if out:
            yield out
    yield gzip.flush()

"""An httpx transport on one pooled aiohttp session: the gateway keeps the httpx API, not its pool.

Measured in bench/ (docs/design.md): httpcore's pool walks every connection, with a poll()
syscall each, on every request and every release, which cost ~4 ms of CPU per request at 50
concurrent requests; aiohttp's connector hands out an idle connection in constant time. The
`httpx-aiohttp` package does the same wrapping but does not suit a proxy: it maps a refused
connection to ConnectTimeout, re-quotes the URL (the query would not be forwarded byte for byte),
and lets aiohttp add Accept-Encoding and User-Agent headers the client never sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from django.conf import settings
from multidict import CIMultiDict
from yarl import URL

__all__ = ["AiohttpTransport", "close_clients", "upstream_client"]

# Headers aiohttp would otherwise invent; the gateway forwards exactly what it was given.
_NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
_CHUNK = 64 * 1024


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        # Fixed-size pieces bound what each connection holds in flight (iter_any would hand over
        # everything buffered at once); bench --stream-memory measures it.
        with _mapped_errors(None):
            async for chunk in self._response.content.iter_chunked(_CHUNK):
                yield chunk

    async def aclose(self) -> None:
        # A fully read body returns the connection to the pool; a partly read one closes it.
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp connection pool per transport (so per event loop: upstream_client)."""

    def __init__(self, limits: httpx.Limits) -> None:
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                limit_per_host=0,
                keepalive_timeout=self._limits.keepalive_expiry or 30.0,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                skip_auto_headers=_NO_AUTO_HEADERS,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        headers = CIMultiDict(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            # aiohttp frames the body itself (chunked unless a Content-Length is given).
            if name.lower() != b"transfer-encoding"
        )
        body: Any
        try:
            body = request.content or None
        except httpx.RequestNotRead:
            body = _ClientBody(request.stream)  # aiohttp streams it as it comes
        with _mapped_errors(body if isinstance(body, _ClientBody) else None):
            target = request.extensions.get("target")  # (scheme://host:port, ASCII path?query)
            url = (
                URL(target[0] + target[1].decode("ascii"), encoded=True)
                if target is not None
                else URL(str(request.url), encoded=True)
            )
            response = await self._get_session().request(
                request.method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                compress=None,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        idle = request.extensions.get("stream_idle_timeout")
        if idle and response.content_type == "text/event-stream":
            _stream_idle(response, idle)
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response),
            request=request,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode(),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _stream_idle(response: aiohttp.ClientResponse, seconds: float) -> None:
    """Server-sent events: from now on the connection may stay silent for `seconds` between two
    reads instead of the service's read timeout (aiohttp re-arms this timer on every read)."""
    connection = response.connection
    if connection is None or connection.protocol is None:
        return  # the body has been read already: nothing left to wait for
    connection.protocol.read_timeout = seconds
    connection.protocol.start_timeout()


class _ClientBody:
    """A streamed request body that remembers an error raised by its source (the client went
    away mid-upload): aiohttp wraps that in its own connection error, and it is the client's
    failure, never the upstream's, so it is raised as it was."""

    def __init__(self, source: AsyncIterator[bytes]) -> None:
        self._source = source
        self.error: Exception | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._source:
                yield chunk
        except Exception as exc:
            self.error = exc
            raise


class _mapped_errors:
    """aiohttp's errors as the httpx errors the forward stage understands."""

    def __init__(self, body: _ClientBody | None) -> None:
        self._body = body

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(exc, httpx.HTTPError):
            return False
        if self._body is not None and self._body.error is not None:
            raise self._body.error
        mapped = _map(exc)
        if mapped is None:
            return False
        raise mapped from exc


def _map(exc: BaseException) -> httpx.HTTPError | None:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, asyncio.TimeoutError):
        return httpx.PoolTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx.ReadError(message)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError)):
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, aiohttp.ClientError):
        return httpx.ReadError(message)
    return None


_clients: dict[asyncio.AbstractEventLoop, AiohttpTransport] = {}


def upstream_client() -> AiohttpTransport:
    """The shared transport (connection pool) of the running event loop, made on first use."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        limits = httpx.Limits(
            max_connections=settings.PORTIER_UPSTREAM_MAX_CONNECTIONS,
            max_keepalive_connections=settings.PORTIER_UPSTREAM_KEEPALIVE,
            keepalive_expiry=settings.PORTIER_UPSTREAM_KEEPALIVE_EXPIRY,
        )
        client = AiohttpTransport(limits)
        _clients[loop] = client
    return client


async def close_clients() -> None:
    """Close the running event loop's pool (shutdown, or the end of a WSGI request's loop)."""
    loop = asyncio.get_running_loop()
    client = _clients.pop(loop, None)
    if client is not None:
        await client.aclose()

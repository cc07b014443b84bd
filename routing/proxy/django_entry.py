"""The proxy as a Django view: the pipeline's entry for requests that reach Django's own handler.

The served stack hands proxied paths to routing.proxy.asgi_entry instead; this view serves
Django's test client, runserver and a plain Django ASGI deployment. It translates the request to
the context and the answer back, nothing more: run, answer, finish (routing.proxy.pipeline).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from http.cookies import Morsel, SimpleCookie
from typing import Any

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from routing import dataplane
from routing.config.holder import holder
from routing.proxy import pipeline
from routing.proxy.client_ip import resolve_client_ip
from routing.proxy.context import GatewayResponse, RequestContext, request_id_from
from routing.upstream.transport import close_clients

__all__ = ["proxy"]


@csrf_exempt
async def proxy(request: HttpRequest) -> HttpResponse:
    """Run the gateway pipeline for a request that reached Django's own handler."""
    await dataplane.started()
    ctx = _context_from_request(request)
    response = await pipeline.run(ctx)
    if getattr(request, "scope", None) is None:
        # Under WSGI (runserver, the sync test client) every request gets an event loop of its
        # own that dies with it: read the whole answer in this loop, then close its client.
        try:
            if response.stream is not None:
                body = b"".join([chunk async for chunk in response.stream])
                response = dataclasses.replace(response, body=body, stream=None)
        finally:
            await pipeline.finish(ctx, response)
            await close_clients()
        return _to_django(response)
    if response.stream is None:
        await pipeline.finish(ctx, response)
        return _to_django(response)
    return _to_django(response, _finishing(response.stream, ctx, response))


def _context_from_request(request: HttpRequest) -> RequestContext:
    scope: dict[str, Any] | None = getattr(request, "scope", None)
    if scope is not None:
        headers = list(scope["headers"])
        raw_path = scope.get("raw_path") or scope["path"].encode()
    else:  # WSGI: rebuild the header list from META
        headers = [
            (key[5:].replace("_", "-").lower().encode("latin-1"), value.encode("latin-1"))
            for key, value in request.META.items()
            if key.startswith("HTTP_")
        ]
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if request.META.get(key):
                headers.append((key.replace("_", "-").lower().encode(), request.META[key].encode()))
        raw_path = request.path.encode()
    body = request.body

    async def receive_body() -> AsyncIterator[bytes]:
        yield body

    ctx = RequestContext(
        method=request.method or "GET",
        scheme=request.scheme or "http",
        raw_path=raw_path,
        query_string=request.META.get("QUERY_STRING", "").encode("latin-1"),
        headers=headers,
        client_ip=resolve_client_ip(
            request.META.get("REMOTE_ADDR", ""),
            [value for name, value in headers if name == b"x-forwarded-for"],
        ),
        peer_ip=request.META.get("REMOTE_ADDR", ""),
        receive_body=receive_body,
        has_body=bool(body),
        bytes_in=len(body),
        snapshot=holder.current,
    )
    ctx.request_id = request_id_from(ctx.header(b"x-request-id"))
    return ctx


class _RawMorsel(Morsel):
    """A cookie that Django writes out as the upstream's own Set-Cookie line, byte for byte
    (re-rendering would rewrite attributes), while still readable as a normal Morsel."""

    def __init__(self, line: str) -> None:
        super().__init__()
        name, _, rest = line.partition("=")
        value = rest.split(";", 1)[0].strip()
        self._key, self._value, self._coded_value = name.strip(), value, value
        self.line = line

    def output(self, attrs: Any = None, header: str = "Set-Cookie:") -> str:
        return f"{header} {self.line}".strip()


def _raw_cookies(lines: list[str]) -> SimpleCookie:
    cookies = SimpleCookie()
    for index, line in enumerate(lines):
        # Indexed keys: two cookies of one name (different paths) must both reach the client.
        dict.__setitem__(cookies, f"{index}:{line.partition('=')[0].strip()}", _RawMorsel(line))
    return cookies


def _to_django(
    response: GatewayResponse, stream: AsyncIterator[bytes] | None = None
) -> HttpResponse:
    if stream is None:
        out: HttpResponse = HttpResponse(response.body, status=response.status)
    else:
        out = StreamingHttpResponse(stream, status=response.status)
    cookies = []
    for name, value in response.headers:
        if name == b"set-cookie":
            cookies.append(value.decode("latin-1"))
        else:
            out.headers[name.decode("latin-1")] = value.decode("latin-1")
    if "content-type" not in out.headers:
        del out.headers["Content-Type"]
    if cookies:
        out.cookies = _raw_cookies(cookies)
    return out


async def _finishing(
    stream: AsyncIterator[bytes], ctx: RequestContext, response: GatewayResponse
) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            yield chunk
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
        await pipeline.finish(ctx, response)

"""A composite route's answer: its backends called, their JSON merged into one object.

Used by the pipeline instead of forward when the route has `backends`
(routing.config.composite). GET and HEAD only (405 with Allow otherwise). Each backend:

- a target of its service picked through a Lease (the service's in-flight cap, balancing,
  health and circuit, as for any request), sent through the shared upstream client; a refused
  connection is tried once more on another target when there is one;
- the headers the transform stage built for the upstream (the caller's identity headers,
  X-Forwarded-*, X-Request-ID, traceparent, and the client's own headers a route forwards),
  without the request's body and framing headers, its conditional and range headers and its
  Accept-Encoding (the answer is read here, not relayed), and with `Accept: application/json`;
- its path rendered: placeholders and `{key.field}` references percent-encoded where they land;
- its timeout (the backend's own, else the service's read timeout) over the whole call, from
  connecting to the answer's last byte; a backend that depends on another waits for it first,
  outside its own timeout, and fails when that one failed;
- its answer read up to PORTIER_COMPOSITE_MAX_BYTES, never past it: a larger one, a status
  other than 2xx, a compressed answer or one that is not a JSON object or array is a failure.

Independent backends run at once. The merged object takes each answer, in the order the
backends are listed, under its `key`, or field by field at the top level (a later one's field
wins); `fields` keeps only those top-level fields (of an object, or of each object of a list).
Some failed: still 200, with `X-Portier-Partial: true` and `X-Portier-Failed` naming them (their
key, else their service), the body the merged data only. All failed: 502 `upstream_error`. For
the log and metrics, the request's upstream status and target are the first listed backend's
that answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import httpx
from django.conf import settings

from routing.config.composite import BackendSpec, Piece, Placeholder, Reference
from routing.config.spec import TargetSpec
from routing.proxy.bounded import read_bounded
from routing.proxy.context import GatewayError, GatewayResponse, Headers, RequestContext
from routing.proxy.rewrite import placeholder_values
from routing.upstream.lease import Lease, Overloaded
from routing.upstream.transport import upstream_client

__all__ = ["forward_composite"]

logger = logging.getLogger("portier.aggregate")

# What describes the client's own request body, or would change the answer's form: a backend
# is asked a plain GET for JSON.
_NOT_SENT = frozenset(
    {
        b"host",
        b"content-length",
        b"content-type",
        b"content-encoding",
        b"transfer-encoding",
        b"expect",
        b"accept",
        b"accept-encoding",
        b"range",
        b"if-range",
        b"if-match",
        b"if-none-match",
        b"if-modified-since",
        b"if-unmodified-since",
    }
)
_ALLOW = [(b"allow", b"GET, HEAD")]


class BackendFailed(Exception):
    """This backend has no answer to merge; the message says why (logged, never sent)."""


@dataclass(slots=True)
class _Answered:
    data: Any
    status: int
    target: TargetSpec


async def forward_composite(ctx: RequestContext) -> GatewayResponse:
    route = ctx.route
    assert route is not None and route.composite is not None
    if ctx.method not in ("GET", "HEAD"):
        raise GatewayError(
            405, "method_not_allowed", f"{ctx.method} is not allowed here.", list(_ALLOW)
        )
    backends = route.composite.backends
    headers = [(name, value) for name, value in ctx.upstream_headers if name not in _NOT_SENT]
    headers.append((b"accept", b"application/json"))
    value_of = placeholder_values(ctx)
    loop = asyncio.get_running_loop()
    started = loop.time()
    calls: dict[int, asyncio.Task[_Answered]] = {}
    by_key: dict[str, asyncio.Task[_Answered]] = {}
    # A TaskGroup would cancel the others at the first failure: each backend fails alone.
    for index, backend in enumerate(backends):
        waits = {key: by_key[key] for key in backend.after}
        calls[index] = asyncio.ensure_future(_call(ctx, backend, headers, value_of, waits))
        if backend.key is not None:
            by_key[backend.key] = calls[index]
    try:
        await asyncio.wait(calls.values())
    except BaseException:  # cancelled: the client went away; no backend is left running
        for task in calls.values():
            task.cancel()
        await asyncio.gather(*calls.values(), return_exceptions=True)
        raise
    ctx.upstream_seconds = loop.time() - started
    merged: dict[str, Any] = {}
    failed: list[str] = []
    for index, backend in enumerate(backends):
        try:
            answered = calls[index].result()
            _merge(merged, backend, answered.data)
        except BackendFailed as exc:
            failed.append(backend.name)
            logger.warning(
                "composite backend %s failed %s: %s",
                backend.name,
                ctx.request_id,
                exc,
                extra={"request_id": ctx.request_id},
            )
            continue
        if ctx.upstream_status is None:
            ctx.upstream_status, ctx.target = answered.status, answered.target
            ctx.target_url = answered.target.key
    marks = [(b"x-portier-failed", ", ".join(failed).encode())] if failed else []
    if len(failed) == len(backends):
        raise GatewayError(
            502, "upstream_error", "None of the composite route's backends answered.", marks
        )
    body = json.dumps(merged, ensure_ascii=False, separators=(",", ":")).encode()
    answer: Headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),  # made for this caller, of several answers
        (b"x-request-id", ctx.request_id.encode()),
    ]
    if failed:
        answer += [(b"x-portier-partial", b"true"), *marks]
    answer.extend(ctx.response_headers)
    if ctx.method == "HEAD":
        body = b""
    ctx.bytes_out += len(body)
    return GatewayResponse(200, answer, body=body)


async def _call(
    ctx: RequestContext,
    backend: BackendSpec,
    headers: Headers,
    value_of: Callable[[str], str],
    waits: dict[str, asyncio.Task[_Answered]],
) -> _Answered:
    answers: dict[str, Any] = {}
    for key, task in waits.items():
        try:
            answers[key] = (await asyncio.shield(task)).data
        except BackendFailed:
            raise BackendFailed(f"it reads the answer of {key!r}, which failed") from None
    raw_path = _render(backend.path, value_of, answers, query=False)
    if backend.query is not None:
        raw_path += b"?" + _render(backend.query, value_of, answers, query=True)
    service = backend.service
    try:
        lease = Lease(service)
    except Overloaded:
        raise BackendFailed(f"service {service.name!r} is at capacity") from None
    try:
        async with asyncio.timeout(backend.timeout):
            return await _fetch(lease, raw_path, headers)
    except TimeoutError:
        # The composite's own budget, shorter than the service's: no fault of the target.
        lease.abandoned()
        raise BackendFailed(f"no whole answer within {backend.timeout:g} s") from None
    except BackendFailed:
        raise
    except Exception as exc:  # one backend's surprise must not cost the others their answers
        logger.exception("composite backend %s crashed %s", backend.name, ctx.request_id)
        raise BackendFailed(f"crashed: {exc!r}") from None
    finally:
        lease.close()


async def _fetch(lease: Lease, raw_path: bytes, headers: Headers) -> _Answered:
    service = lease.service
    client = upstream_client()
    target = lease.pick()
    retried = False
    while True:
        if target is None:
            raise BackendFailed(f"no healthy target of service {service.name!r}")
        request = httpx.Request(
            "GET",
            target.origin.copy_with(raw_path=target.base_path.encode("ascii") + raw_path),
            headers=headers,
            extensions={"timeout": service.timeout},
        )
        try:
            response = await client.handle_async_request(request)
        except httpx.ConnectError:
            lease.failed()  # never reached the upstream: safe to ask another target, once
            tried = set(lease.tried)
            following = None if retried else lease.pick()
            # The balancer hands back a tried target when it is the only usable one: asking it
            # again would loop as fast as it refuses.
            if following is None or following.sid in tried:
                raise BackendFailed(f"{target.key} refused the connection") from None
            target, retried = following, True
            continue
        except httpx.HTTPError as exc:
            lease.failed()
            raise BackendFailed(f"{target.key} failed: {exc!r}") from None
        try:
            lease.answered(response.status_code)
            data = await _json_answer(response)
        except httpx.HTTPError as exc:
            lease.failed()
            raise BackendFailed(f"{target.key} broke mid-answer: {exc!r}") from None
        finally:
            await response.aclose()
        return _Answered(data, response.status_code, target)


async def _json_answer(response: httpx.Response) -> Any:
    status = response.status_code
    if not 200 <= status < 300:
        raise BackendFailed(f"answered {status}")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise BackendFailed(f"answered a {encoding}-encoded body")
    limit = settings.PORTIER_COMPOSITE_MAX_BYTES
    too_large = BackendFailed(f"answered more than {limit} bytes")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = await read_bounded(response.aiter_raw(), limit, too_large)
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise BackendFailed("answered something other than JSON") from None
    if not isinstance(data, dict | list):
        raise BackendFailed("answered JSON that is not an object or an array")
    return data


def _render(
    pieces: tuple[Piece, ...],
    value_of: Callable[[str], str],
    answers: dict[str, Any],
    *,
    query: bool,
) -> bytes:
    out: list[str] = []
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
            continue
        if isinstance(piece, Placeholder):
            value = value_of(piece.name)
            if piece.name.startswith("path."):
                # A group of the matched path is text of a URL (its escapes kept): decoded first,
                # so it is encoded once, and `&` or `=` in it cannot add a query parameter.
                value = unquote(value)
        else:
            value = _field(piece, answers)
        if not query and value in (".", ".."):
            # A path step upstream (%2E is `.` too, RFC 3986): never sent, whoever supplied it
            # (an external issuer's claim, an earlier backend's answer).
            raise BackendFailed(f"a placeholder's value {value!r} would be a path step")
        out.append(quote(value, safe=""))
    return "".join(out).encode("ascii")


def _field(reference: Reference, answers: dict[str, Any]) -> str:
    value = answers[reference.key]
    for name in reference.fields:
        if isinstance(value, dict) and name in value:
            value = value[name]
        elif isinstance(value, list) and name.isdigit() and int(name) < len(value):
            value = value[int(name)]
        else:
            raise BackendFailed(f"{reference.key}'s answer has no {'.'.join(reference.fields)}")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise BackendFailed(f"{reference.key}.{'.'.join(reference.fields)} is not a single value")


def _merge(merged: dict[str, Any], backend: BackendSpec, data: Any) -> None:
    kept = _kept(data, backend.fields)
    if backend.key is not None:
        merged[backend.key] = kept
    elif isinstance(kept, dict):
        merged.update(kept)
    else:
        raise BackendFailed("answered an array, which only a backend with a `key` can hold")


def _kept(data: Any, fields: frozenset[str] | None) -> Any:
    if fields is None:
        return data
    if isinstance(data, dict):
        return {name: value for name, value in data.items() if name in fields}
    return [
        {name: value for name, value in item.items() if name in fields}
        if isinstance(item, dict)
        else item
        for item in data
    ]

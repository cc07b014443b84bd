"""The route tester: what the gateway would do with a request, explained, without doing it.

An admin asks "which route would this hit, and what would happen"; the answer must be the
pipeline's own, so each finding comes from the stage that decides it in the live snapshot
(routing.config.holder): the real `match`, `admit`, `identify`, `authorize` and `transform`,
run on a RequestContext built from the inputs. What a stage would change elsewhere is only
read: the rate-limit count is read, never incremented; the balancer's choice is peeked, no
lease taken (routing.api.tester_findings). The upstream is never called.

Unlike the pipeline, the tester goes on after a refusal where it can (a 403 still shows the
tier and the upstream request the caller would get once allowed); `outcome` says where the
real request would end. A refusal of a report-only policy or tier is shown as its decision
("would deny, report-only: not enforced", with the status it would answer) and ends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from accounts.services import parse_key
from routing.api import tester_findings as findings
from routing.config.holder import holder
from routing.config.spec import RouteSpec, Snapshot
from routing.observe import tracing
from routing.proxy.context import Answered, GatewayError, RequestContext, request_id_from
from routing.proxy.stages.access import authorize, policy_refusal
from routing.proxy.stages.admission import admit
from routing.proxy.stages.identity import identify
from routing.proxy.stages.match import headers_match, host_matches, match, route_path_matches
from routing.proxy.stages.transform import transform

__all__ = ["TesterRequest", "explain"]

_EXPLICIT_ONLY = frozenset({"TRACE", "CONNECT"})  # as stages/match.py: only when listed


@dataclass(frozen=True, slots=True)
class TesterRequest:
    """The request to explain: `path` may carry a query string; `token` is a Bearer JWT, an
    API key (ptr_...), or a whole Authorization value with its scheme."""

    method: str
    host: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    token: str = ""
    client_ip: str = "127.0.0.1"


def _refusal(exc: GatewayError | Answered, stage: str) -> dict[str, Any]:
    if isinstance(exc, Answered):
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in exc.response.headers}
        return {"stage": stage, "status": exc.response.status, "headers": headers}
    return {"stage": stage, "status": exc.status, "code": exc.code, "message": exc.message}


def build_context(request: TesterRequest, snapshot: Snapshot) -> RequestContext:
    """The RequestContext an entry would build for this request (no body: body rules are not
    run, and the upstream request's headers are the gateway's own work on these)."""
    raw_path, _, query = request.path.partition("?")
    headers = [
        (k.strip().lower().encode("latin-1"), v.encode("latin-1"))
        for k, v in request.headers.items()
        if k.strip().lower() != "host"
    ]
    if request.host:
        headers.insert(0, (b"host", request.host.encode("latin-1")))
    token = request.token.strip()
    if token:
        if parse_key(token) is not None:
            headers.append((b"x-api-key", token.encode("latin-1")))
        else:
            value = token if " " in token else f"Bearer {token}"
            headers.append((b"authorization", value.encode("latin-1")))
    ctx = RequestContext(
        method=request.method.upper(),
        scheme="http",
        raw_path=raw_path.encode("utf-8"),
        query_string=query.encode("utf-8"),
        headers=headers,
        client_ip=request.client_ip,
        receive_body=None,
        has_body=False,
        snapshot=snapshot,
        request_id=request_id_from(None),
        peer_ip=request.client_ip,
    )
    tracing.begin(ctx)
    return ctx


def candidates(ctx: RequestContext, winner: RouteSpec | None) -> list[dict[str, Any]]:
    """Every route whose path matches, in the order the matcher tries them: the winner, and for
    the others why they lost (host, headers, method, or an earlier route won)."""
    found: list[dict[str, Any]] = []
    for route in ctx.snapshot.routes:
        if not ctx.path or route_path_matches(route, ctx.path) is None:
            continue
        reasons = []
        if route.hosts and not host_matches(ctx.host, route.hosts):
            reasons.append(f"host {ctx.host or '(none)'} is not {', '.join(route.hosts)}")
        if route.header_matches and not headers_match(ctx, route):
            wanted = ", ".join(f"{name}: {value}" for name, value in route.header_matches)
            reasons.append(f"headers do not match ({wanted})")
        if route.methods and ctx.method not in route.methods:
            reasons.append(f"method {ctx.method} not in {', '.join(sorted(route.methods))}")
        elif not route.methods and ctx.method in _EXPLICIT_ONLY:
            reasons.append(f"method {ctx.method} must be listed explicitly")
        won = winner is not None and route is winner
        if not reasons and not won and winner is not None:
            reasons.append(f"an earlier route won ({winner.name})")
        found.append(
            {
                "route": route.name,
                "path": route.path,
                "match_type": route.match_type,
                "priority": route.priority,
                "won": won,
                "reasons": reasons,
            }
        )
    return found


async def explain(request: TesterRequest, snapshot: Snapshot | None = None) -> dict[str, Any]:
    """The findings for one request against `snapshot` (default: this process's live one)."""
    snapshot = snapshot or holder.current
    ctx = build_context(request, snapshot)
    report: dict[str, Any] = {
        "snapshot_version": snapshot.version,
        "request": {
            "method": ctx.method,
            "host": request.host,
            "path": ctx.raw_path.decode("utf-8"),
            "query": ctx.query_string.decode("utf-8"),
        },
        "outcome": None,
        "route": None,
    }
    stops: list[dict[str, Any]] = []
    try:
        await match(ctx)
    except GatewayError as exc:
        stops.append(_refusal(exc, "match"))
    report["candidates"] = candidates(ctx, ctx.route)
    route = ctx.route
    if route is None:
        report["outcome"] = stops[0]
        return report
    report["route"] = {"name": route.name, "id": route.id, "service": route.service.name}
    try:
        await admit(ctx)
        report["admission"] = {"result": "admitted"}
    except (Answered, GatewayError) as exc:
        stops.append(_refusal(exc, "admission"))
        report["admission"] = {"result": "answered", **stops[-1]}
    report["identity"] = await _identity(ctx, stops)
    report["policy"] = await _policy(ctx, route, stops)
    report["tier"] = findings.tier_count(ctx)
    await transform(ctx)
    report["upstream"] = findings.upstream_request(ctx)
    report["cache"] = findings.cache_verdict(ctx)
    report["cors"] = findings.cors_verdict(ctx)
    report["target"] = findings.target_choice(ctx)
    if report["tier"] and report["tier"].get("decision") == "denied":
        stops.append({"stage": "limit", "status": 429, "code": "rate_limited"})
    report["outcome"] = stops[0] if stops else {"stage": "forward", "status": None}
    return report


async def _identity(ctx: RequestContext, stops: list[dict[str, Any]]) -> dict[str, Any]:
    try:
        ctx.identity = await identify(ctx.header(b"authorization"), ctx.header(b"x-api-key"))
    except GatewayError as exc:
        stops.append(_refusal(exc, "identity"))
        return {"result": "refused", "status": exc.status, "code": exc.code}
    identity = ctx.identity
    if identity is None:
        return {"result": "anonymous"}
    return {
        "result": "authenticated",
        "method": identity.method,
        "subject": identity.subject,
        "email": identity.email,
        "roles": sorted(identity.roles),
        "key_prefix": identity.key_prefix,
    }


async def _policy(
    ctx: RequestContext, route: RouteSpec, stops: list[dict[str, Any]]
) -> dict[str, Any]:
    policy = route.policy
    described = {
        "name": policy.name if policy else "",
        "kind": policy.kind if policy else "public",
        "roles": list(policy.roles) if policy else [],
        "report_only": policy.report_only if policy else False,
    }
    try:
        await authorize(ctx)
    except GatewayError as exc:
        stops.append(_refusal(exc, "policy"))
        return {**described, "decision": "denied", "status": exc.status, "code": exc.code}
    refusal = policy_refusal(policy, ctx.identity) if policy is not None else None
    if refusal is not None:  # a report-only policy: the request goes on
        decision = findings.REPORT_ONLY
        return {**described, "decision": decision, "status": refusal.status, "code": refusal.code}
    return {**described, "decision": "allowed"}

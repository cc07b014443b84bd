"""Portier's load benchmark: the gateway vs the peers users would pick instead, in one table.

    .venv/bin/python bench/run.py [--smoke] [--profile] [--duration S] [--reps N] [--only NAME...]
    .venv/bin/python bench/run.py --soak SECONDS | --stream-memory | --in-process

Starts an upstream (NGINX, core 1), the gateway as production runs it (gunicorn, one
PortierWorker, core 0, access log on), and the peers the selected scenarios need: the Express
gateway of seed 004 as written and with upstream keep-alive, the reference proxy, NGINX as a
plain proxy (each on core 0), a two-worker gateway (unpinned); then loads each with wrk
(core 1). Prints medians per scenario and server, Portier / each peer, the issue's targets, and
writes bench/results/<timestamp>.json. See bench/README.md for how to read the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jwt
import redis

from bench import load, memory, profiling, targets, tools
from bench.gateway import Gateway, access_log_on, gateway_env, start_gateway
from bench.peers import Peer, start_express, start_nginx_proxy
from bench.procs import (
    Child,
    Children,
    cpu_pin,
    cpu_seconds,
    free_port,
    peak_rss_mib,
    reset_peak_rss,
    wait_http_ok,
)
from bench.report import (
    Row,
    Sample,
    format_ratios,
    format_table,
    ratios,
    write_json,
)
from bench.scenarios import (
    DIRECT,
    EXPRESS,
    EXPRESS_KEEPALIVE,
    GATEWAY,
    GATEWAY_2W,
    NGINX_PROXY,
    REFERENCE,
    SCENARIOS,
    Scenario,
    route_named,
)
from bench.upstream import ENDPOINTS, Upstream, start_upstream

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
REDIS_URL = "redis://127.0.0.1:6379/14"
PROFILE_SCENARIO = "small-c50"  # --profile's scenario unless --only names one


@dataclass
class Served:
    """Where one variant of a scenario is loaded, and which processes pay for it."""

    url: str
    pids: Callable[[], list[int]]
    headers: dict[str, str]


@dataclass
class Stack:
    """Everything started for one bench run."""

    upstream: Upstream
    gateway: Gateway
    reference: Child | None
    reference_url: str
    reference_token: str
    tokens: dict[str, str]  # gateway Bearer tokens by kind, for the JWT scenarios
    lua: Path
    peers: dict[str, Peer]  # express, express-keepalive, nginx-proxy, gateway-2w: those started
    unavailable: dict[str, str]  # peers that could not be started, and why


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="1 rep of ~1 s per scenario")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the gateway on the first --only scenario (default small-c50)",
    )
    mode.add_argument(
        "--soak",
        type=float,
        metavar="SECONDS",
        help="gateway RSS trend: small route, 50 conns, SECONDS after a 30 s warm-up",
    )
    mode.add_argument(
        "--stream-memory",
        action="store_true",
        help="gateway RSS per connection on the streamed 1 MiB route (10 vs 100 conns)",
    )
    mode.add_argument(
        "--in-process",
        action="store_true",
        help="CPU per request of the ASGI app called in-process (bench/driver.py), for --only "
        "scenarios (default small-c50): --reps rounds of 8,000 requests",
    )
    parser.add_argument("--duration", type=float, help="seconds per run (default 10; profile 15)")
    parser.add_argument("--reps", type=int, help="repetitions per scenario (default 3)")
    parser.add_argument("--warmup", type=float, help="seconds of unmeasured load before each run")
    names = [s.name for s in SCENARIOS]
    parser.add_argument("--only", nargs="+", choices=names, metavar="SCENARIO", help=str(names))
    args = parser.parse_args(argv)
    smoke = args.smoke
    args.duration = args.duration or (1.0 if smoke else 15.0 if args.profile else 10.0)
    args.reps = args.reps or (1 if smoke else 3)
    if args.warmup is None:
        args.warmup = 0.0 if smoke else 30.0 if args.soak else 2.0
    return args


def redis_reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


def drop_redis_keys(url: str, prefix: str) -> None:
    """The bench's keys are all under its unique prefix: leave db 14 as it was found."""
    with contextlib.suppress(redis.RedisError):
        client = redis.Redis.from_url(url, socket_timeout=2)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


def make_token(secret: str, subject: str, roles: list[str]) -> str:
    now = int(time.time())
    claims = {"sub": subject, "user_id": subject, "roles": roles, "token_type": "access"}
    claims |= {"iat": now, "exp": now + 24 * 3600, "jti": secrets.token_hex(8)}
    return jwt.encode(claims, secret, algorithm="HS256")


def start_reference(
    children: Children, upstream_url: str, redis_url: str | None, key_prefix: str
) -> tuple[Child, str, str]:
    """The reference proxy on core 0, one process, with its own JWT secret."""
    secret = secrets.token_urlsafe(32)
    port = free_port()
    env = {
        **os.environ,
        "REF_UPSTREAM": upstream_url,
        "REF_JWT_SECRET": secret,
        "REF_REDIS_URL": redis_url or "",
        "REF_COUNTER_KEY": f"{key_prefix}:reference:hits",
    }
    argv = [
        *cpu_pin(0),
        sys.executable,
        "-m",
        "uvicorn",
        "bench.reference_proxy:app",
        "--host=127.0.0.1",
        f"--port={port}",
        "--loop=uvloop",
        "--http=httptools",
        "--no-access-log",
        "--log-level=warning",
        "--lifespan=on",
    ]
    child = children.spawn("reference-proxy", argv, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    token = make_token(secret, "bench-user", ["user"])
    wait_http_ok(url + ENDPOINTS["small"], child, headers={"Authorization": f"Bearer {token}"})
    return child, url, token


def start_stack(
    children: Children,
    workdir: Path,
    needed: set[str],
    redis_url: str | None,
    key_prefix: str,
) -> Stack:
    """The upstream, the gateway, and the servers of `needed` (bench.scenarios.SERVERS)."""
    upstream = start_upstream(children, workdir)
    print(f"bench: upstream {upstream.kind} at {upstream.url} (core 1)")
    probe = route_named("bench-small").path
    gateway = start_gateway(children, workdir, upstream.url, redis_url, key_prefix, probe)
    log = "on" if access_log_on() else "off (BENCH_ACCESS_LOG_LEVEL)"
    print(
        f"bench: gateway gunicorn at {gateway.url}, worker pid {gateway.workers[0]} (core 0), "
        f"access log {log}"
    )
    reference, reference_url, reference_token = None, "", ""
    if REFERENCE in needed:
        reference, reference_url, reference_token = start_reference(
            children, upstream.url, redis_url, key_prefix
        )
        print(f"bench: reference proxy at {reference_url}, pid {reference.pid} (core 0)")
    peers, unavailable = start_peers(
        children, workdir, needed, upstream, gateway, redis_url, key_prefix
    )
    tokens = {
        "user": make_token(gateway.secret_key, "bench-user", ["user"]),
        "admin": make_token(gateway.secret_key, "bench-admin", ["admin"]),
    }
    lua = load.write_lua(workdir)
    return Stack(
        upstream,
        gateway,
        reference,
        reference_url,
        reference_token,
        tokens,
        lua,
        peers,
        unavailable,
    )


def start_peers(
    children: Children,
    workdir: Path,
    needed: set[str],
    upstream: Upstream,
    gateway: Gateway,
    redis_url: str | None,
    key_prefix: str,
) -> tuple[dict[str, Peer], dict[str, str]]:
    """The peers the selected scenarios need; a missing tool skips that peer, saying why."""
    started: dict[str, Peer | str] = {}
    if GATEWAY_2W in needed:
        two = start_gateway(
            children,
            workdir / "gateway-2w",
            upstream.url,
            redis_url,
            f"{key_prefix}-2w",
            route_named("bench-small").path,
            secret_key=gateway.secret_key,
            workers=2,
        )
        started[GATEWAY_2W] = Peer(GATEWAY_2W, two.url, two.child, two.workers)
    for name, keepalive in ((EXPRESS, False), (EXPRESS_KEEPALIVE, True)):
        if name in needed:
            started[name] = start_express(
                children,
                upstream.url,
                gateway.secret_key,
                redis_url,
                key_prefix,
                keepalive=keepalive,
            )
    if NGINX_PROXY in needed:
        if upstream.kind != "nginx":
            started[NGINX_PROXY] = "nginx not found: `apt-get install nginx` (as root)"
        else:
            started[NGINX_PROXY] = start_nginx_proxy(
                children, workdir / "nginx-proxy", upstream.url
            )
    peers = {name: p for name, p in started.items() if isinstance(p, Peer)}
    unavailable = {name: p for name, p in started.items() if isinstance(p, str)}
    for name, peer in peers.items():
        where = "unpinned" if name == GATEWAY_2W else "core 0"
        print(f"bench: {name} at {peer.url}, pid(s) {peer.pids} ({where})")
    for name, reason in unavailable.items():
        print(f"bench: {name} skipped: {reason}")
    return peers, unavailable


def served(stack: Stack, scenario: Scenario, variant: str) -> Served:
    route = route_named(scenario.route)
    auth = {"Authorization": f"Bearer {stack.tokens[scenario.token]}"} if scenario.token else {}
    if scenario.origin:
        auth["Origin"] = scenario.origin
    if variant == GATEWAY:
        workers = stack.gateway.workers
        return Served(stack.gateway.url + route.path, lambda: workers, auth)
    if variant == DIRECT:
        return Served(stack.upstream.endpoint(route.payload), stack.upstream.serving_pids, auth)
    if variant in stack.peers:  # the same route path and token as the gateway's
        peer = stack.peers[variant]
        return Served(peer.url + route.path, lambda: peer.pids, auth)
    assert variant == REFERENCE and stack.reference is not None
    pid = stack.reference.pid
    headers = {"Authorization": f"Bearer {stack.reference_token}"}
    return Served(stack.reference_url + ENDPOINTS[route.payload], lambda: [pid], headers)


def preflight(stack: Stack, scenario: Scenario, variant: str) -> None:
    """One request per target, checked against the direct body: never benchmark a 404."""
    target = served(stack, scenario, variant)
    direct = served(stack, scenario, DIRECT)
    bodies = []
    for url, headers in ((target.url, target.headers), (direct.url, direct.headers)):
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 (http only)
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            bodies.append(response.read())
    if bodies[0] != bodies[1]:
        raise RuntimeError(f"{scenario.name}/{variant}: {target.url} does not relay the body")


def measure(
    served_at: Served, connections: int, seconds: float, warmup: float, lua: Path
) -> Sample:
    """Warm up, then one wrk run bracketed by CPU and peak-RSS readings of the serving process."""
    if warmup > 0:
        load.run_wrk(
            served_at.url,
            connections=connections,
            seconds=warmup,
            lua=lua,
            headers=served_at.headers,
        )
    pids = served_at.pids()
    rss_reset = reset_peak_rss(pids)
    cpu_before = cpu_seconds(pids)
    result = load.run_wrk(
        served_at.url, connections=connections, seconds=seconds, lua=lua, headers=served_at.headers
    )
    cpu = cpu_seconds(pids) - cpu_before
    return Sample(
        rps=result.rps,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        requests=result.requests,
        errors=result.errors,
        cpu_s_per_1k=cpu / result.requests * 1000 if result.requests else None,
        peak_rss_mib=peak_rss_mib(pids) if rss_reset else None,
        wrk=result.raw,
    )


def run_matrix(stack: Stack, scenarios: list[Scenario], args: argparse.Namespace) -> list[Row]:
    """All repetitions, interleaving scenarios and servers so slow drift hits all rows alike."""
    rows: dict[tuple[str, str], Row] = {}
    for scenario in scenarios:
        for variant in scenario.variants if not scenario.pending else [GATEWAY]:
            row = rows[scenario.name, variant] = Row(scenario.name, variant, scenario.connections)
            row.pending = scenario.pending
            row.unavailable = stack.unavailable.get(variant)
            if measurable(row):
                preflight(stack, scenario, variant)
                row.url = served(stack, scenario, variant).url
    for rep in range(args.reps):
        for scenario in scenarios:
            for variant in scenario.variants:
                row = rows.get((scenario.name, variant))
                if row is None or not measurable(row):
                    continue
                try:
                    sample = measure(
                        served(stack, scenario, variant),
                        scenario.connections,
                        args.duration,
                        args.warmup,
                        stack.lua,
                    )
                except RuntimeError:
                    peer = stack.peers.get(variant)
                    if peer is None or peer.child.alive():
                        raise  # the gateway itself, or a peer that still runs: a real failure
                    reason = f"died in rep {rep + 1} of {scenario.name}: {peer.child.log_tail()}"
                    print(f"bench: {variant} {reason}", flush=True)
                    _lost(rows.values(), variant, reason, args.reps)
                    continue
                row.samples.append(sample)
                flag = f"  ({sample.errors} errors!)" if sample.errors else ""
                print(
                    f"  rep {rep + 1}/{args.reps} {scenario.name:<15} {variant:<17} "
                    f"{sample.rps:>9,.0f} req/s  p99 {sample.p99_ms:7.2f} ms{flag}",
                    flush=True,
                )
    return list(rows.values())


def _lost(rows: Iterable[Row], variant: str, reason: str, reps: int) -> None:
    """A peer that stopped mid-run: the rest of the run goes on without it; its rows keep the
    reps measured before, flagged in the table when they miss some."""
    for row in rows:
        if row.variant != variant or len(row.samples) == reps:
            continue
        if row.samples:
            row.died = reason
        else:
            row.unavailable = reason


def measurable(row: Row) -> bool:
    return not row.pending and not row.unavailable and not row.died


def run_profile(stack: Stack, args: argparse.Namespace, stamp: str) -> dict[str, Any]:
    """py-spy the gateway worker for `duration` s while wrk loads the first `--only` scenario's
    route (the small route without one) at its connection count."""
    name = args.only[0] if args.only else PROFILE_SCENARIO
    scenario = next(s for s in SCENARIOS if s.name == name)
    target = served(stack, scenario, GATEWAY)
    seconds = max(1, round(args.duration))
    if args.warmup:
        load.run_wrk(
            target.url,
            connections=scenario.connections,
            seconds=args.warmup,
            lua=stack.lua,
            headers=target.headers,
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    speedscope = RESULTS / f"{stamp}-profile.speedscope.json"
    worker = stack.gateway.workers[0]
    wrk = load.start_wrk(
        target.url,
        connections=scenario.connections,
        seconds=seconds + 3,
        lua=stack.lua,
        headers=target.headers,
    )
    spy: subprocess.Popen[bytes] | None = None
    try:
        time.sleep(1)
        spy = profiling.record(tools.py_spy_path(), worker, seconds, speedscope)
        spy_output, _ = spy.communicate(timeout=seconds + 60)
        result = load.finish_wrk(wrk, seconds + 3)
    finally:
        for proc in (spy, wrk):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    if not speedscope.exists():
        raise RuntimeError(f"py-spy wrote no profile:\n{spy_output.decode(errors='replace')}")
    profile = profiling.load_speedscope(speedscope)
    folded = RESULTS / f"{stamp}-profile.folded"
    profiling.write_folded(profile, folded)
    print(
        f"\nunder py-spy (not comparable to the table): {result.rps:,.0f} req/s, "
        f"p99 {result.p99_ms:.2f} ms, {result.errors} errors"
    )
    summary = print_profile(profile)
    summary |= {"speedscope": str(speedscope), "folded": str(folded), "rps": result.rps}
    print(f"\nspeedscope: {speedscope}\nfolded stacks: {folded}")
    return summary


def run_memory(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    """--soak or --stream-memory on the gateway worker (fresh: nothing else has loaded it yet)."""
    worker = stack.gateway.workers[0]
    if args.soak:
        target = served(stack, route_scenario("bench-small"), "gateway")
        summary = memory.soak(target.url, worker, args.soak, args.warmup, stack.lua)
        print("\n" + memory.format_soak(summary))
        return {"soak": summary}
    results: dict[str, Any] = {}
    for variant in ("gateway", "reference"):
        if variant == "reference" and stack.reference is None:
            continue
        target = served(stack, route_scenario("bench-1m"), variant)
        pid = target.pids()[0]
        print(f"stream memory: {variant} (pid {pid})")
        results[variant] = memory.stream_memory(
            target.url, pid, args.duration, args.warmup, stack.lua, target.headers
        )
    for variant, summary in results.items():
        print("\n" + memory.format_stream_memory(variant, summary))
    return {"stream_memory": results}


def run_in_process(
    stack: Stack, args: argparse.Namespace, workdir: Path, redis_url: str | None, key_prefix: str
) -> dict[str, Any]:
    """bench/driver.py on core 0 in the gateway's environment (its database, Redis prefix and
    access log), for each `--only` scenario at its connection count; the gunicorn gateway idles."""
    results: dict[str, Any] = {}
    for name in args.only or [PROFILE_SCENARIO]:
        scenario = next(s for s in SCENARIOS if s.name == name)
        target = served(stack, scenario, GATEWAY)
        env = gateway_env(
            workdir, redis_url, key_prefix, free_port(), secret_key=stack.gateway.secret_key
        )
        # prometheus-client's multiprocess mode, as under gunicorn (gateway_site/gunicorn.conf.py).
        metrics = workdir / f"driver-metrics-{name}"
        metrics.mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
        out = workdir / f"driver-{name}.json"
        headers = [f"--header={k}: {v}" for k, v in target.headers.items()]
        argv = [
            *cpu_pin(0),
            sys.executable,
            "-m",
            "bench.driver",
            f"--path={route_named(scenario.route).path}",
            *headers,
            f"--rounds={args.reps}",
            f"--requests={1000 if args.smoke else 8000}",
            f"--warmup={100 if args.smoke else 1000}",
            f"--concurrency={scenario.connections}",
            f"--out={out}",
        ]
        print(f"in-process: {name} ({args.reps} rounds)")
        with (workdir / f"driver-{name}.log").open("wb") as log:
            finished = subprocess.run(
                argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=1800
            )
        if finished.returncode != 0:
            tail = (workdir / f"driver-{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"bench/driver.py failed on {name}:\n{tail}")
        summary = json.loads(out.read_text())
        for round_ in summary["rounds"]:
            if set(round_["statuses"]) != {"200"}:  # never count the CPU of a refusal
                raise RuntimeError(f"{name}: answers other than 200: {round_['statuses']}")
        results[name] = summary
    print("\nin-process, CPU per request (µs; uvicorn's HTTP parsing not included):")
    for name, summary in results.items():
        rounds = ", ".join(f"{r['cpu_us_per_request']:.0f}" for r in summary["rounds"])
        gc_us = statistics.median(r["gc_us_per_request"] for r in summary["rounds"])
        print(
            f"  {name:16} min {summary['cpu_us_per_request_min']:6.0f}  "
            f"median {summary['cpu_us_per_request_median']:6.0f}  (rounds: {rounds}; "
            f"GC {gc_us:.0f} µs/request)"
        )
    return {"in_process": results}


def route_scenario(route: str) -> Scenario:
    """The first scenario on a route, checked with one request so a 404 is never measured."""
    return next(s for s in SCENARIOS if s.route == route)


def print_profile(profile: profiling.Profile, top: int = 25) -> dict[str, Any]:
    n = profile.seconds or 1.0
    print("\nsampled seconds per thread (idle excluded, as far as py-spy can tell):")
    for thread, seconds in profile.threads.items():
        print(f"{seconds:7.2f}  {thread}")
    print(f"\ntop {top} functions by own time, event-loop thread ({profile.seconds:.2f} s):")
    print(f"{'own %':>6} {'total %':>7}  function (file)")
    own_rows = []
    for (name, file), count in profile.own.most_common(top):
        total = profile.total[name, file]
        where = profiling.short_file(file)
        print(f"{100 * count / n:6.1f} {100 * total / n:7.1f}  {name} ({where})")
        own_rows.append({"function": name, "file": file, "own": count, "total": total})
    print("\nown time by area:")
    areas = profiling.areas_of(profile)
    for area, count in areas.most_common():
        print(f"{100 * count / n:6.1f}  {area}")
    print("\ninclusive time of Portier's functions:")
    portier = [
        (key, count)
        for key, count in profile.total.most_common()
        if profiling.area_of(key[1]).startswith("portier")
    ]
    for (name, file), count in portier[:15]:
        print(f"{100 * count / n:6.1f}  {name} ({profiling.short_file(file)})")
    return {
        "seconds": profile.seconds,
        "threads": profile.threads,
        "top_own": own_rows,
        "areas": dict(areas),
    }


def tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "-"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else "-"


def git_commit() -> str:
    return tool_version(["git", "-C", str(REPO), "describe", "--always", "--dirty"])


def meta(
    args: argparse.Namespace, stack: Stack, redis_url: str | None, commit: str
) -> dict[str, Any]:
    """`commit`: read when the servers started; the tree can change during a long run."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    end_commit = git_commit()
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": commit,
        **({"commit_at_end": end_commit} if end_commit != commit else {}),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "wrk": tool_version(["wrk", "-v"]),
        "upstream": stack.upstream.kind,
        "redis": redis_url,
        "duration_s": args.duration,
        "reps": args.reps,
        "warmup_s": args.warmup,
        "smoke": args.smoke,
        "pinning": "gateway, reference, express, nginx-proxy core 0; wrk+upstream core 1; "
        "gateway-2w unpinned",
        "access_log": access_log_on(),
        "node": tool_version(["node", "--version"]),
        "nginx": tool_version(["nginx", "-v"]),
        "unavailable": stack.unavailable,
    }


def selected(args: argparse.Namespace) -> list[Scenario]:
    return [s for s in SCENARIOS if not args.only or s.name in args.only]


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the with-blocks, which stop every child


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # Even when started with SIGINT ignored (a background job), Ctrl-C/SIGINT must clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    tools.ensure_apt_tools()
    tools.ensure_bench_extra()
    scenarios = selected(args)
    redis_url = REDIS_URL if redis_reachable(REDIS_URL) else None
    print(f"bench: redis {redis_url or 'not reachable: in-process cache, no INCR in reference'}")
    key_prefix = f"portier-bench-{secrets.token_hex(4)}"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    commit = git_commit()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="portier-bench-") as tmp,
            Children(Path(tmp)) as children,
        ):
            needed = {v for s in scenarios if not s.pending for v in s.variants}
            if args.profile or args.soak or args.in_process:
                needed = {GATEWAY}  # the gateway alone: nothing else idling on its core
            if args.stream_memory:
                needed = {GATEWAY, REFERENCE}  # the reference to compare
            stack = start_stack(children, Path(tmp), needed, redis_url, key_prefix)
            if args.profile:
                summary = run_profile(stack, args, stamp)
                profile_meta = {**meta(args, stack, redis_url, commit), "profile": summary}
                write_json(RESULTS / f"{stamp}-profile.json", profile_meta, [])
                return 0
            if args.in_process:
                results = run_in_process(stack, args, Path(tmp), redis_url, key_prefix)
                out = RESULTS / f"{stamp}-in-process.json"
                write_json(out, meta(args, stack, redis_url, commit), [], extra=results)
                print(f"\nresults: {out}")
                return 0
            if args.soak or args.stream_memory:
                kind = "soak" if args.soak else "stream-memory"
                scenario = route_scenario("bench-small" if args.soak else "bench-1m")
                for variant in ("gateway", "reference") if args.stream_memory else ("gateway",):
                    preflight(stack, scenario, variant)
                results = run_memory(stack, args)
                out = RESULTS / f"{stamp}-{kind}.json"
                write_json(out, meta(args, stack, redis_url, commit), [], extra=results)
                print(f"\nresults: {out}")
                return 0
            rows = run_matrix(stack, scenarios, args)
            run_meta = meta(args, stack, redis_url, commit)
    finally:
        if redis_url:
            drop_redis_keys(redis_url, key_prefix)
    print(f"\n{args.reps} rep(s) x {args.duration:.0f} s, medians; CPU = serving process(es)")
    print(format_table(rows))
    print("\nPortier / each server (medians; req/s above 1 and p99, CPU below 1 favour Portier):")
    print(format_ratios(ratios(rows)))
    print("\n" + targets.format_targets(targets.evaluate(rows), access_log=access_log_on()))
    out = RESULTS / f"{stamp}{'-smoke' if args.smoke else ''}.json"
    write_json(out, run_meta, rows, extra={"targets": targets.evaluate(rows)})
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nbench: interrupted; every server it started has been stopped", file=sys.stderr)
        sys.exit(130)

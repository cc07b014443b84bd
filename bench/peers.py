"""The peers a user would pick instead of Portier: the Express gateway of seed 004 and NGINX.

- `express` / `express-keepalive`: bench/express/gateway.js on Node, pinned to core 0 like the
  gateway, the second with KEEPALIVE=1 (a keep-alive http.Agent to the upstream). Its npm
  dependencies are pinned in bench/express/package-lock.json and installed with `npm ci` into
  bench/express/node_modules (git-ignored) when missing or older than the lock file.
- `nginx-proxy`: a second NGINX, one worker on core 0, proxy_pass with upstream keep-alive on
  the public routes' paths: the ceiling of proxying on this machine.

A peer whose tools are missing is not started: `start_*` returns the reason, the bench prints
it with how to install them, and the table shows that peer's rows as unavailable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.procs import Child, Children, cpu_pin, free_port, wait_http_ok, worker_pids
from bench.scenarios import EDGE_CORS, EDGE_TRANSFORM, ROUTES, BenchRoute, route_named
from bench.upstream import ENDPOINTS

__all__ = ["Peer", "express_routes", "start_express", "start_nginx_proxy"]

EXPRESS_DIR = Path(__file__).resolve().parent / "express"
_LOCK_STAMP = "node_modules/.bench-lock-sha256"  # package-lock.json's hash at the last `npm ci`
NODE_MAJOR_MIN = 18
NODE_HOWTO = (
    "install Node.js 20 and npm (Debian/Ubuntu: `apt-get install nodejs npm`, or "
    "https://nodejs.org), then rerun; the bench runs `npm ci` in bench/express itself"
)


@dataclass
class Peer:
    name: str
    url: str
    child: Child
    pids: list[int]


def _node_problem() -> str | None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return f"{'node' if node is None else 'npm'} not found: {NODE_HOWTO}"
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    try:
        major = int(version.lstrip("v").split(".")[0])
    except ValueError:
        return f"cannot read `node --version` ({version!r}): {NODE_HOWTO}"
    if major < NODE_MAJOR_MIN:
        return f"node {version} is older than {NODE_MAJOR_MIN}: {NODE_HOWTO}"
    return None


def _lock_hash() -> str:
    return hashlib.sha256((EXPRESS_DIR / "package-lock.json").read_bytes()).hexdigest()


def ensure_express_deps() -> str | None:
    """`npm ci` when node_modules is missing or stale; the reason it cannot run, else None."""
    problem = _node_problem()
    if problem:
        return problem
    stamp = EXPRESS_DIR / _LOCK_STAMP
    if stamp.exists() and stamp.read_text().strip() == _lock_hash():
        return None
    print("bench: installing the Express gateway's packages (npm ci in bench/express) ...")
    npm = shutil.which("npm") or "npm"
    argv = [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"]
    done = subprocess.run(argv, cwd=EXPRESS_DIR, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return f"`npm ci` in bench/express failed:\n{done.stdout}{done.stderr}"
    stamp.write_text(_lock_hash() + "\n")
    return None


def _route_spec(route: BenchRoute) -> dict[str, object]:
    """One Portier bench route as gateway.js reads it (BENCH_ROUTES)."""
    minute = None
    if route.tier_rate:
        count, _, unit = route.tier_rate.partition("/")
        minute = int(count) * {"s": 60, "m": 1, "h": 1 / 60, "d": 1 / 1440}[unit]
    headers = EDGE_TRANSFORM["request"]["headers"] if route.edge else {}
    return {
        "path": route.path,
        "upstreamPath": ENDPOINTS[route.payload],
        "policy": route.policy,
        "ratePerMinute": int(minute) if minute else None,
        "cors": (
            {
                "origins": EDGE_CORS["origins"],
                "credentials": EDGE_CORS["credentials"],
                "maxAge": EDGE_CORS["max_age"],
            }
            if route.edge
            else None
        ),
        "setHeaders": headers.get("set", {}),
        "addHeaders": headers.get("add", {}),
    }


def express_routes() -> list[dict[str, object]]:
    # Portier's cache and audit have no counterpart in the seed: those routes stay out.
    return [_route_spec(r) for r in ROUTES if not r.cache and r.policy != "admin_only"]


def start_express(
    children: Children,
    upstream_url: str,
    jwt_secret: str,
    redis_url: str | None,
    key_prefix: str,
    *,
    keepalive: bool,
) -> Peer | str:
    """gateway.js on core 0; the reason it is unavailable when Node or its packages are not."""
    problem = ensure_express_deps()
    if problem:
        return problem
    port = free_port()
    env = {
        **os.environ,
        "NODE_ENV": "production",
        "PORT": str(port),
        "UPSTREAM": upstream_url,
        "JWT_SECRET": jwt_secret,
        "REDIS_URL": redis_url or "",
        "RL_PREFIX": f"{key_prefix}:express{'-ka' if keepalive else ''}:rl:",
        "KEEPALIVE": "1" if keepalive else "0",
        "BENCH_ROUTES": json.dumps(express_routes()),
    }
    name = "express-keepalive" if keepalive else "express"
    node = shutil.which("node") or "node"
    argv = [*cpu_pin(0), node, str(EXPRESS_DIR / "gateway.js")]
    child = children.spawn(name, argv, env=env, cwd=EXPRESS_DIR)
    url = f"http://127.0.0.1:{port}"
    wait_http_ok(url + route_named("bench-small").path, child)
    return Peer(name, url, child, [child.pid])


def _nginx_proxy_conf(workdir: Path, port: int, upstream_url: str) -> str:
    user = "user root root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {workdir}/{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # The public routes only: NGINX alone checks no JWT and keeps no rate-limit counter.
    locations = "\n".join(
        f"        location = {r.path} {{ proxy_pass http://bench_upstream{ENDPOINTS[r.payload]}; }}"
        for r in ROUTES
        if not (r.policy or r.cache or r.edge)
    )
    server = upstream_url.removeprefix("http://")
    return f"""{user}worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp}
    keepalive_timeout 120s;
    keepalive_requests 10000000;
    upstream bench_upstream {{
        server {server};
        keepalive 256;
        keepalive_requests 10000000;
    }}
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffers 16 64k;
    proxy_max_temp_file_size 0;  # relay large answers through memory, never a temp file
    server {{
        listen 127.0.0.1:{port} backlog=4096;
{locations}
    }}
}}
"""


def start_nginx_proxy(children: Children, workdir: Path, upstream_url: str) -> Peer | str:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        return "nginx not found: `apt-get install nginx` (as root)"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(_nginx_proxy_conf(workdir, port, upstream_url))
    argv = [*cpu_pin(0), nginx, "-c", str(conf), "-p", str(workdir), "-e", "stderr"]
    child = children.spawn("nginx-proxy", argv, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    wait_http_ok(url + route_named("bench-small").path, child)
    return Peer("nginx-proxy", url, child, worker_pids(child.pid))

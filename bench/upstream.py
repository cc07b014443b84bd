"""The upstream every variant talks to: NGINX when installed, else a small uvicorn app.

NGINX answering from memory and the page cache costs far less CPU than the gateway, so the direct
rows show what the machine and the load generator can do and the gateway rows show what the
gateway adds. The fallback (bench/upstream_app.py) serves the same three endpoints.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.procs import Child, Children, cpu_pin, free_port, wait_http_ok, worker_pids

__all__ = ["ENDPOINTS", "Upstream", "start_upstream", "write_payloads"]

REPO = Path(__file__).resolve().parent.parent

# Upstream path of each payload; the gateway routes rewrite onto these.
ENDPOINTS = {"small": "/up/small", "16k": "/up/16k", "1m": "/up/1m"}
FILES = {"small": "small.json", "16k": "16k.json", "1m": "1m.bin"}


@dataclass
class Upstream:
    kind: str  # "nginx" or "uvicorn"
    url: str
    child: Child
    serving_pids: Callable[[], list[int]]

    def endpoint(self, payload: str) -> str:
        return self.url + ENDPOINTS[payload]


def small_body() -> bytes:
    """About 100 bytes of JSON, like a typical small API answer."""
    body = {"id": 12345, "name": "portier-bench", "ok": True, "items": [1, 2, 3], "pad": ""}
    raw = json.dumps(body, separators=(",", ":"))
    body["pad"] = "x" * max(0, 100 - len(raw))
    return json.dumps(body, separators=(",", ":")).encode()


def write_payloads(directory: Path) -> dict[str, Path]:
    """The three bodies as files: NGINX serves them with sendfile, the fallback from memory."""
    directory.mkdir(parents=True, exist_ok=True)
    json_16k = b'{"data":"' + b"a" * (16 * 1024 - 11) + b'"}'
    payloads = {"small": small_body(), "16k": json_16k, "1m": os.urandom(1024 * 1024)}
    paths = {}
    for key, data in payloads.items():
        path = directory / FILES[key]
        path.write_bytes(data)
        path.chmod(0o644)
        paths[key] = path
    directory.chmod(0o755)
    return paths


def _nginx_conf(workdir: Path, port: int, files: dict[str, Path]) -> str:
    small = files["small"].read_text()
    user = "user root root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {workdir}/{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp}
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 120s;
    keepalive_requests 10000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = {ENDPOINTS["small"]} {{
            default_type application/json;
            return 200 '{small}';
        }}
        location = {ENDPOINTS["16k"]} {{
            default_type application/json;
            alias {files["16k"]};
        }}
        location = {ENDPOINTS["1m"]} {{
            default_type application/octet-stream;
            alias {files["1m"]};
        }}
    }}
}}
"""


def start_nginx(children: Children, workdir: Path, files: dict[str, Path]) -> Upstream:
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(_nginx_conf(workdir, port, files))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    argv = [*cpu_pin(1), nginx, "-c", str(conf), "-p", str(workdir), "-e", "stderr"]
    child = children.spawn("upstream-nginx", argv, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    wait_http_ok(url + ENDPOINTS["small"], child)
    return Upstream("nginx", url, child, lambda: worker_pids(child.pid))


def start_uvicorn(children: Children, files: dict[str, Path]) -> Upstream:
    port = free_port()
    env = {**os.environ, "BENCH_PAYLOAD_DIR": str(files["small"].parent)}
    argv = [
        *cpu_pin(1),
        sys.executable,
        "-m",
        "uvicorn",
        "bench.upstream_app:app",
        "--host=127.0.0.1",
        f"--port={port}",
        "--loop=uvloop",
        "--http=httptools",
        "--no-access-log",
        "--log-level=warning",
        "--lifespan=off",
    ]
    child = children.spawn("upstream-uvicorn", argv, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    wait_http_ok(url + ENDPOINTS["small"], child)
    return Upstream("uvicorn", url, child, lambda: [child.pid])


def start_upstream(children: Children, workdir: Path) -> Upstream:
    files = write_payloads(workdir / "payloads")
    if shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
        return start_nginx(children, workdir, files)
    print("bench: nginx not found, using the uvicorn upstream (bench/upstream_app.py)")
    return start_uvicorn(children, files)

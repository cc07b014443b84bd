"""Start Portier as production runs it: gunicorn + PortierWorker, one worker, pinned to core 0.

The gateway gets a throw-away SQLite database, its own Redis key prefix (db 14), WARNING-level
application logs and the access log on, as production runs (one JSON line per request into the
gateway's log file; `BENCH_ACCESS_LOG_LEVEL=WARNING` turns it off). PORTIER_ENV=production, so
the bench runs with DEBUG off and the production checks on. The two-worker variant
(`workers=2`, unpinned) gets its own database and key prefix but the same SECRET_KEY, so the
same tokens pass on both.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.procs import Child, Children, cpu_pin, free_port, wait_http_ok, worker_pids

__all__ = ["Gateway", "access_log_on", "gateway_env", "start_gateway"]

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@dataclass
class Gateway:
    url: str
    child: Child  # the gunicorn master
    workers: list[int]
    secret_key: str


def access_log_on() -> bool:
    return os.environ.get("BENCH_ACCESS_LOG_LEVEL", "INFO").upper() in ("DEBUG", "INFO")


def gateway_env(
    workdir: Path,
    redis_url: str | None,
    key_prefix: str,
    port: int,
    *,
    secret_key: str,
    workers: int = 1,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTIER_", "DJANGO_"))}
    for name in ("DATABASE_URL", "REDIS_URL", "CACHE_KEY_PREFIX", "SECRET_KEY", "DEBUG"):
        env.pop(name, None)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "gateway_site.settings",
            "PORTIER_ENV": "production",
            "SECRET_KEY": secret_key,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": f"sqlite:///{workdir / 'gateway.sqlite3'}",
            "CACHE_KEY_PREFIX": key_prefix,
            "LOG_LEVEL": "WARNING",
            # On by default, as in production (its lines go to the log file);
            # BENCH_ACCESS_LOG_LEVEL=WARNING turns it off.
            "ACCESS_LOG_LEVEL": os.environ.get("BENCH_ACCESS_LOG_LEVEL", "INFO"),
            "WEB_CONCURRENCY": str(workers),
            # No recycling after a million requests (production's default): on a fast day the
            # 10-minute soak passes that, and a new worker would end the measurement.
            "PORTIER_MAX_REQUESTS": "0",
            "PORTIER_BIND": f"127.0.0.1:{port}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    # The rate-limit I/O path under test (async or thread): `PORTIER_RATELIMIT_BACKEND=thread`.
    if os.environ.get("PORTIER_RATELIMIT_BACKEND"):
        env["PORTIER_RATELIMIT_BACKEND"] = os.environ["PORTIER_RATELIMIT_BACKEND"]
    return env


def _run_step(argv: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{result.stdout}\n{result.stderr}")
    if result.stdout.strip():
        print(result.stdout.strip())


def prepare_database(env: dict[str, str], upstream_url: str) -> None:
    """Migrate the temp database, then create the bench routes and publish them."""
    python = sys.executable
    _run_step([python, "manage.py", "migrate", "--noinput", "-v0"], env, "manage.py migrate")
    _run_step([python, "bench/load_config.py", upstream_url], env, "bench/load_config.py")


def start_gateway(
    children: Children,
    workdir: Path,
    upstream_url: str,
    redis_url: str | None,
    key_prefix: str,
    probe_path: str,
    *,
    secret_key: str | None = None,
    workers: int = 1,
) -> Gateway:
    """One worker pinned to core 0; with `workers` > 1, unpinned (it shares wrk's cores)."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    secret_key = secret_key or secrets.token_urlsafe(48)
    env = gateway_env(workdir, redis_url, key_prefix, port, secret_key=secret_key, workers=workers)
    prepare_database(env, upstream_url)
    argv = [
        *(cpu_pin(0) if workers == 1 else []),
        str(VENV_BIN / "gunicorn"),
        "-c",
        "gateway_site/gunicorn.conf.py",
        "gateway_site.asgi:application",
    ]
    name = "gateway-gunicorn" if workers == 1 else f"gateway-{workers}w-gunicorn"
    child = children.spawn(name, argv, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    wait_http_ok(url + probe_path, child)
    pids = worker_pids(child.pid)
    deadline = time.monotonic() + 30
    while len(pids) < workers and time.monotonic() < deadline:  # the second may fork later
        time.sleep(0.1)
        pids = worker_pids(child.pid)
    if len(pids) != workers:
        raise RuntimeError(f"expected {workers} gunicorn worker(s), found {pids}")
    return Gateway(url, child, pids, secret_key)

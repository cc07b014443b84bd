"""Start Portier as production runs it: gunicorn + PortierWorker, one worker, pinned to core 0.

The gateway gets a throw-away SQLite database, its own Redis key prefix (db 14) and WARNING-level
logs (the access log writes one INFO line per request, which would measure the log handler).
PORTIER_ENV=production, so the bench runs with DEBUG off and the production checks on.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.procs import Child, Children, cpu_pin, free_port, wait_http_ok, worker_pids

__all__ = ["Gateway", "gateway_env", "start_gateway"]

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@dataclass
class Gateway:
    url: str
    child: Child  # the gunicorn master
    workers: list[int]
    secret_key: str


def gateway_env(workdir: Path, redis_url: str | None, key_prefix: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTIER_", "DJANGO_"))}
    for name in ("DATABASE_URL", "REDIS_URL", "CACHE_KEY_PREFIX", "SECRET_KEY", "DEBUG"):
        env.pop(name, None)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "gateway_site.settings",
            "PORTIER_ENV": "production",
            "SECRET_KEY": secrets.token_urlsafe(48),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": f"sqlite:///{workdir / 'gateway.sqlite3'}",
            "CACHE_KEY_PREFIX": key_prefix,
            "LOG_LEVEL": "WARNING",
            # BENCH_ACCESS_LOG_LEVEL=INFO: the access log on (its lines go to the log file).
            "ACCESS_LOG_LEVEL": os.environ.get("BENCH_ACCESS_LOG_LEVEL", "WARNING"),
            "WEB_CONCURRENCY": "1",
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
) -> Gateway:
    port = free_port()
    env = gateway_env(workdir, redis_url, key_prefix, port)
    prepare_database(env, upstream_url)
    argv = [
        *cpu_pin(0),
        str(VENV_BIN / "gunicorn"),
        "-c",
        "gateway_site/gunicorn.conf.py",
        "gateway_site.asgi:application",
    ]
    child = children.spawn("gateway-gunicorn", argv, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    wait_http_ok(url + probe_path, child)
    workers = worker_pids(child.pid)
    if len(workers) != 1:
        raise RuntimeError(f"expected one gunicorn worker, found {workers}")
    return Gateway(url, child, workers, env["SECRET_KEY"])

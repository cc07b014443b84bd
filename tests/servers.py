"""Real HTTP servers for the tests: uvicorn on 127.0.0.1 in a background thread."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from gateway_site.serve import UVICORN_OPTIONS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerThread:
    """Serves an ASGI app with production's uvicorn options (gateway_site.serve)."""

    def __init__(
        self, app: Any, *, lifespan: str = "off", port: int = 0, http: str | None = None
    ) -> None:
        """port=0 picks a free port; pass a stopped server's port to bring it back there.
        `http` replaces the gateway's protocol (its limits and timeouts, which follow the
        settings a test overrides) with one of uvicorn's own, for an upstream."""
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        options = {**UVICORN_OPTIONS, "loop": "asyncio", "lifespan": lifespan}
        if http is not None:
            options["http"] = http
        config = uvicorn.Config(app, log_level="warning", **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


ROOT = Path(__file__).resolve().parents[1]


def import_settings(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`import gateway_site.settings` in a fresh interpreter with this whole environment: the
    settings refuse, at import, what could not work."""
    return subprocess.run(
        [sys.executable, "-c", "import gateway_site.settings"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


@contextmanager
def gateway_processes(count: int = 2, *, fast_poll: bool = True, **env: str) -> Iterator[list[str]]:
    """More gateway processes (`python -m gateway_site.serve`), sharing this test run's Redis and
    nothing else: each has an empty database file, so their configuration comes from Redis and
    they cannot publish one of their own. `env` adds settings (e.g. PROMETHEUS_MULTIPROC_DIR,
    or DATABASE_URL for processes that share a database). They poll for new configuration every
    0.1 s; `fast_poll=False` keeps the default interval, for tests that measure propagation."""
    workdir = tempfile.mkdtemp(prefix="portier-gw-")
    environment = _gateway_environment(Path(workdir), env)
    if not fast_poll:
        environment.pop("PORTIER_CONFIG_POLL_INTERVAL")
    ports = [free_port() for _ in range(count)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "gateway_site.serve", "--port", str(port)],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        deadline = time.monotonic() + 20
        for url in urls:
            while not _answers_health(url):
                assert time.monotonic() < deadline, "gateway process did not start"
                time.sleep(0.1)
        yield urls
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def _answers_health(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class GatewayProcess:
    """A gateway in a process of its own (gunicorn_gateway, uvicorn_gateway)."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path  # its stdout and stderr

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def gunicorn_gateway(workers: int = 1, **env: str) -> Iterator[GatewayProcess]:
    """The production server as deployed: `portier serve` (gunicorn, gateway_site/gunicorn.conf.py,
    uvicorn workers) with PORTIER_ENV=production, on a free port, sharing this test run's Redis as
    gateway_processes' do (an empty database: the configuration comes from Redis). `env` adds or
    overrides settings (PORTIER_GRACEFUL_TIMEOUT, ...). The test may signal it and wait for it;
    whatever is still running at the end is stopped."""
    port = free_port()
    command = [sys.executable, "-m", "gateway_site.cli", "serve", "--bind", f"127.0.0.1:{port}"]
    production = {
        "PORTIER_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "ALLOWED_HOSTS": "127.0.0.1",
        "WEB_CONCURRENCY": str(workers),
    }
    with _gateway_process(command, port, {**production, **env}) as gateway:
        yield gateway


@contextmanager
def uvicorn_gateway(**env: str) -> Iterator[GatewayProcess]:
    """`python -m gateway_site.serve` (one uvicorn process, as dev.py runs it), set up as
    gunicorn_gateway's."""
    port = free_port()
    command = [sys.executable, "-m", "gateway_site.serve", "--port", str(port)]
    with _gateway_process(command, port, env) as gateway:
        yield gateway


@contextmanager
def _gateway_process(
    command: list[str], port: int, env: dict[str, str]
) -> Iterator[GatewayProcess]:
    workdir = Path(tempfile.mkdtemp(prefix="portier-gw-"))
    environment = _gateway_environment(workdir, env)
    log = workdir / "output.log"
    with log.open("wb") as out:
        # Its own process group: gunicorn's workers are stopped with it, even if the master dies.
        process = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=out, stderr=out, start_new_session=True
        )
    gateway = GatewayProcess(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 60
        while not _answers_health(gateway.url):
            assert process.poll() is None, f"gateway exited:\n{gateway.output()[-3000:]}"
            assert time.monotonic() < deadline, f"no answer:\n{gateway.output()[-3000:]}"
            time.sleep(0.1)
        yield gateway
    finally:
        if process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=40)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def _gateway_environment(workdir: Path, env: dict[str, str]) -> dict[str, str]:
    """A gateway process's environment: this test run's Redis and key prefix, an empty database
    file of its own (so its configuration comes from Redis), a 0.1 s poll; `env` on top."""
    from django.conf import settings

    return {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{workdir}/empty.sqlite3",
        "REDIS_URL": settings.REDIS_URL,
        "CACHE_KEY_PREFIX": settings.CACHES["default"]["KEY_PREFIX"],
        "PORTIER_CONFIG_POLL_INTERVAL": "0.1",
        "LOG_LEVEL": "WARNING",
        **env,
    }

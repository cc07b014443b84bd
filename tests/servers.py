"""Real HTTP servers for the tests: uvicorn on 127.0.0.1 in a background thread."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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

    def __init__(self, app: Any, *, lifespan: str = "off", port: int = 0) -> None:
        """port=0 picks a free port; pass a stopped server's port to bring it back there."""
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        options = {**UVICORN_OPTIONS, "loop": "asyncio", "lifespan": lifespan}
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


@contextmanager
def gateway_processes(count: int = 2, **env: str) -> Iterator[list[str]]:
    """More gateway processes (`python -m gateway_site.serve`), sharing this test run's Redis and
    nothing else: each has an empty database file, so their configuration comes from Redis and
    they never publish one of their own. `env` adds settings (e.g. PROMETHEUS_MULTIPROC_DIR)."""
    from django.conf import settings

    workdir = tempfile.mkdtemp(prefix="portier-gw-")
    environment = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{workdir}/empty.sqlite3",
        "REDIS_URL": settings.REDIS_URL,
        "CACHE_KEY_PREFIX": settings.CACHES["default"]["KEY_PREFIX"],
        "PORTIER_CONFIG_POLL_INTERVAL": "0.1",
        "LOG_LEVEL": "WARNING",
        **env,
    }
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
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False

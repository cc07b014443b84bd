"""A Redis of the test's own, to kill, hang and restart: the shared one on 6379 is never touched.

It keeps nothing on disk (`--save "" --appendonly no`), so a restart on the same port comes back
empty, as a Redis without persistence does in production.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

import redis

from tests.servers import free_port

__all__ = ["RedisServer"]

# The fault tests kill and restart a Redis of their own: they need the server binary, as
# `python3 dev.py test` does when no Redis runs (README: how to install it).
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """One `redis-server` process on 127.0.0.1; `kill()` is kill -9, `start()` brings it back on
    the same port."""

    def __init__(self, *args: str, port: int | None = None, config: str = "") -> None:
        """`args` are more options (`--cluster-enabled yes`, `--sentinel`...); `config` is a
        configuration file's text, for what a sentinel must be able to rewrite."""
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = tempfile.mkdtemp(prefix="portier-redis-")
        self.args = args
        self.config = os.path.join(self.workdir, "redis.conf")
        with open(self.config, "w") as file:
            file.write(config)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            [
                *(REDIS_SERVER, self.config, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", self.workdir, *self.args),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=0.2, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except redis.RedisError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.kill()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)
        client.close()
        return self

    def kill(self) -> None:
        """kill -9: no goodbye to the clients, nothing kept."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # a stopped process dies on SIGKILL anyway
            self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: connections are still accepted by the kernel, and nothing answers."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

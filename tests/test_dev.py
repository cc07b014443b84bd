"""`python3 dev.py run` as a developer runs it: it stops what it started.

Stopping dev.py (Ctrl-C, `kill`, a supervisor's SIGTERM) once left the gateway and the echo
upstream running, and the next run failed with "address in use". Each test runs the real
dev.py on free ports, with a database and an admin password file of its own (the developer's
portier.sqlite3 and .dev-admin-password are untouched) and the in-process cache (the tests' Redis
is untouched), and checks that both ports are free when it has ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
STARTUP = 60.0  # seconds to migrate, load the demo and serve, on a busy machine
STOPPING = 20.0  # seconds dev.py may take to stop both servers (the gateway has nothing to drain)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One database for the module's runs: the first migrates it, the next find it ready."""
    return f"sqlite:///{tmp_path_factory.mktemp('dev-run') / 'dev.sqlite3'}"


class DevRun:
    """`python3 dev.py run <port>` with its echo upstream on another free port."""

    def __init__(self, database: str, workdir: Path) -> None:
        self.port, self.echo_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "dev.log"
        environment = {
            key: value
            for key, value in os.environ.items()
            if key not in {"REDIS_URL", "PORTIER_RATELIMIT_REDIS_URL", "CACHE_KEY_PREFIX"}
        }
        environment |= {
            "DATABASE_URL": database,
            "PORTIER_DEV_PASSWORD_FILE": str(workdir / "admin-password"),
            "PORTIER_DEV_ECHO_PORT": str(self.echo_port),
            "LOG_LEVEL": "WARNING",
        }
        with self.log.open("wb") as out:
            # A session of its own, so whatever it leaves behind can be found and cleaned up.
            self.process = subprocess.Popen(
                [sys.executable, "dev.py", "run", str(self.port)],
                cwd=ROOT,
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + STARTUP
        while not _answers(self.url + "/health"):
            assert self.process.poll() is None, f"dev.py exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"no answer:\n{self.output()}"
            time.sleep(0.2)

    def wait_for_exit(self) -> int:
        try:
            return self.process.wait(timeout=STOPPING)
        except subprocess.TimeoutExpired:
            pytest.fail(f"dev.py did not stop within {STOPPING} s:\n{self.output()}")

    def clean_up(self) -> None:
        """After a failed test: end dev.py and anything it started (same session)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in _session_members(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def dev_run(database: str, tmp_path: Path) -> Iterator[DevRun]:
    run = DevRun(database, tmp_path)
    yield run
    run.clean_up()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def _session_members(sid: int) -> list[int]:
    """Processes still in session `sid` (Linux's /proc; elsewhere nothing is found)."""
    members = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        with contextlib.suppress(ValueError, OSError):
            if os.getsid(int(entry)) == sid:
                members.append(int(entry))
    return members


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_it_stops_the_gateway_and_the_echo_upstream_when_stopped(dev_run, signum):
    dev_run.wait_until_serving()
    demo = httpx.get(dev_run.url + "/demo/hello", timeout=5)
    assert demo.status_code == 200  # the demo route reaches the echo upstream on its port
    assert not _refused(dev_run.echo_port)

    dev_run.process.send_signal(signum)

    # It dies of the signal it was sent, as a shell expects (exit status 128 + signal).
    assert dev_run.wait_for_exit() == -signum, dev_run.output()
    assert _refused(dev_run.port), "the gateway is still listening"
    assert _refused(dev_run.echo_port), "the echo upstream is still listening"
    assert _session_members(dev_run.process.pid) == []


def test_it_stops_the_echo_upstream_when_the_gateway_cannot_start(dev_run):
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", dev_run.port))
        taken.listen()

        try:
            code = dev_run.process.wait(timeout=STARTUP)
        except subprocess.TimeoutExpired:
            pytest.fail(f"dev.py did not give up:\n{dev_run.output()}")

    assert code == 1, dev_run.output()
    assert "a server stopped by itself" in dev_run.output()
    assert _refused(dev_run.echo_port), "the echo upstream is still listening"
    assert _session_members(dev_run.process.pid) == []

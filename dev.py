#!/usr/bin/env python3
"""Portier's developer entry point; needs only Python 3.11+.

python3 dev.py run [PORT]
                      set up .venv, migrate, load the demo, start the echo upstream
                      (127.0.0.1:9001, or PORTIER_DEV_ECHO_PORT) and the gateway on
                      http://127.0.0.1:8000 (or PORT) (SQLite + in-process cache); Ctrl-C or
                      SIGTERM stops both
python3 dev.py test   set up .venv, find or start Redis, run ruff, the migration check and
                      pytest (SQLite, or PostgreSQL when DATABASE_URL is set)
python3 dev.py bench  the load benchmark (bench/README.md): gateway vs direct vs reference
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".portier-installed"
# Another file keeps a test's run of dev.py out of the developer's own (tests/test_dev.py).
PASSWORD_FILE = Path(os.environ.get("PORTIER_DEV_PASSWORD_FILE", ROOT / ".dev-admin-password"))
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
CHILD_GRACE = 35  # seconds a child may take to stop: the gateway drains for up to 30 s


class Stopped(Exception):
    """dev.py run was asked to stop by a signal; the children are stopped before it exits."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


def ensure_venv() -> None:
    """Create .venv and install the project when pyproject.toml changed since the last install."""
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and PY.exists():
        return
    if not PY.exists():
        print("dev.py: creating .venv ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    print("dev.py: installing Portier and its pinned dependencies into .venv ...", flush=True)
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", ".[dev]"], check=True, cwd=ROOT)
    STAMP.write_text(wanted)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def manage(*args: str) -> None:
    subprocess.run([str(PY), "manage.py", *args], check=True, cwd=ROOT)


def run(argv: list[str]) -> int:
    """Set up, then run the echo upstream and the gateway until a signal or until one of them
    exits; both are stopped either way, so the next run finds its ports free."""
    port = int(argv[0]) if argv else 8000
    echo_port = int(os.environ.get("PORTIER_DEV_ECHO_PORT", "9001"))
    # SIGTERM (a supervisor, `kill`) and SIGHUP (a closed terminal) would otherwise end dev.py
    # at once and leave the servers it started holding their ports.
    for each in STOP_SIGNALS:
        signal.signal(each, _raise_stopped)
    children: list[subprocess.Popen[bytes]] = []
    try:
        password = _set_up(echo_port)
        echo = _start([str(PY), "manage.py", "echoserver", "--port", str(echo_port)])
        children.append(echo)
        # The gateway's first proxied call must find the demo upstream listening.
        deadline = time.monotonic() + 15
        while not port_open("127.0.0.1", echo_port) and echo.poll() is None:
            if time.monotonic() > deadline:
                print(f"dev.py run: the echo upstream is not listening on {echo_port}", flush=True)
                return 1
            time.sleep(0.1)
        gateway = ["-m", "gateway_site.serve", "--host", "127.0.0.1", "--port", str(port)]
        children.append(_start([str(PY), *gateway]))
        print(
            f"""
Portier is starting on http://127.0.0.1:{port}
  admin:        http://127.0.0.1:{port}/admin/   user admin, password {password}
  proxied call: curl -i http://127.0.0.1:{port}/demo/hello?x=1
  health:       curl http://127.0.0.1:{port}/health
Ctrl-C stops the gateway and the demo upstream.
""",
            flush=True,
        )
        while all(child.poll() is None for child in children):
            time.sleep(0.2)
        print("dev.py run: a server stopped by itself; stopping the other", flush=True)
        return 1
    except Stopped as stop:
        signum = stop.signum
    except subprocess.CalledProcessError as exc:
        return exc.returncode or 1
    finally:
        # Another signal while stopping must not cut the cleanup short.
        for each in STOP_SIGNALS:
            signal.signal(each, signal.SIG_IGN)
        _stop(children)
    # Die of the signal, as the caller expects of a stopped program (shell status 128 + signal).
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return 128 + signum


def _set_up(echo_port: int) -> str:
    """Migrate, load the demo pointing at the echo upstream, set the admin's password and
    return it."""
    ensure_venv()
    manage("migrate", "--noinput", "-v0")
    manage("loaddemo", "--upstream", f"http://127.0.0.1:{echo_port}")
    if not PASSWORD_FILE.exists():
        PASSWORD_FILE.write_text(secrets.token_urlsafe(12))
    password = PASSWORD_FILE.read_text().strip()
    manage(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model as g; U = g(); "
        "u = U.objects.filter(username='admin').first() or "
        "U.objects.create_superuser('admin', 'admin@example.com', 'x'); "
        f"u.set_password({password!r}); u.save(); "
        "from django.contrib.auth.models import Group; "
        "u.groups.add(Group.objects.get(name='admin'))",
    )
    return password


def _start(command: list[str]) -> subprocess.Popen[bytes]:
    # A process group of its own: Ctrl-C reaches dev.py alone, which stops each child once (a
    # second SIGINT would make uvicorn skip its graceful shutdown), and stopping the group
    # reaches anything the child started.
    return subprocess.Popen(command, cwd=ROOT, process_group=0)


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each child's process group, wait for them, SIGKILL what outlives CHILD_GRACE."""
    for child in children:
        if child.poll() is None:  # a reaped child's group id could be anyone's by now
            _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + CHILD_GRACE
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(child, signal.SIGKILL)
            child.wait()


def _signal_group(child: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it exited just now, with its whole group
        os.killpg(child.pid, signum)


def find_or_start_redis(env: dict[str, str]) -> subprocess.Popen[bytes] | None:
    """Use REDIS_URL, else a Redis on 127.0.0.1:6379, else start redis-server on a free port."""
    if env.get("REDIS_URL"):
        return None
    if port_open("127.0.0.1", 6379):
        env["REDIS_URL"] = "redis://127.0.0.1:6379/15"
        return None
    server = shutil.which("redis-server")
    if server is None:
        sys.exit(
            "dev.py test: the tests need a real Redis and none was found.\n"
            "  Install one (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install "
            "redis)\n  or point REDIS_URL at a running server, e.g. REDIS_URL=redis://host:6379/15"
        )
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="portier-redis-")
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(50):
        if port_open("127.0.0.1", port):
            break
        time.sleep(0.1)
    env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    print(f"dev.py test: started redis-server on port {port} for this run", flush=True)
    return proc


def test(argv: list[str]) -> int:
    ensure_venv()
    env = os.environ.copy()
    # tests/browser/conftest.py launches the same binary; without it those tests fail, never skip.
    chromium = env.get("PORTIER_CHROMIUM", "/usr/bin/chromium")
    if not os.access(chromium, os.X_OK):
        print(
            f"dev.py test: no Chromium at {chromium}, so the browser tests (tests/browser/) will "
            "fail.\n  Install it (Debian/Ubuntu: sudo apt-get install chromium) or point "
            "PORTIER_CHROMIUM at a Chromium binary.",
            flush=True,
        )
    env.setdefault("CACHE_KEY_PREFIX", f"portier-test-{os.getpid()}")
    redis = find_or_start_redis(env)
    database = env.get("DATABASE_URL", "sqlite (default)")
    print(f"dev.py test: database {database.split('@')[-1]}, redis {env['REDIS_URL']}", flush=True)
    try:
        steps = [
            [str(PY), "-m", "ruff", "check", "."],
            [str(PY), "manage.py", "makemigrations", "--check", "--dry-run"],
            [str(PY), "-m", "pytest", *argv],
        ]
        for step in steps:
            code = subprocess.run(step, cwd=ROOT, env=env).returncode
            if code == 5 and step[2] == "pytest":
                print("dev.py test: pytest collected no tests; that is a failure", flush=True)
                return 1
            if code != 0:
                return code
        return 0
    finally:
        if redis is not None:
            redis.terminate()


def bench(argv: list[str]) -> int:
    ensure_venv()
    return subprocess.run([str(PY), "bench/run.py", *argv], cwd=ROOT).returncode


def main() -> int:
    commands = {"run": run, "test": test, "bench": bench}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Portier's developer entry point; needs only Python 3.11+.

python3 dev.py run    set up .venv, migrate, load the demo, start the echo upstream and the
                      gateway on http://127.0.0.1:8000 (SQLite + in-process cache)
python3 dev.py test   set up .venv, find or start Redis, run ruff, the migration check and
                      pytest (SQLite, or PostgreSQL when DATABASE_URL is set)
python3 dev.py bench  the load benchmark (bench/README.md): gateway vs direct vs reference
"""

from __future__ import annotations

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

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".portier-installed"
PASSWORD_FILE = ROOT / ".dev-admin-password"


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


def manage(*args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([str(PY), "manage.py", *args], check=True, cwd=ROOT, env=env)


def run(argv: list[str]) -> int:
    port = int(argv[0]) if argv else 8000
    ensure_venv()
    env = os.environ.copy()
    manage("migrate", "--noinput", "-v0", env=env)
    manage("loaddemo", env=env)
    if not PASSWORD_FILE.exists():
        PASSWORD_FILE.write_text(secrets.token_urlsafe(12))
    password = PASSWORD_FILE.read_text().strip()
    subprocess.run(
        [
            str(PY),
            "manage.py",
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model as g; U = g(); "
            "u = U.objects.filter(username='admin').first() or "
            "U.objects.create_superuser('admin', 'admin@example.com', 'x'); "
            f"u.set_password({password!r}); u.save(); "
            "from django.contrib.auth.models import Group; "
            "u.groups.add(Group.objects.get(name='admin'))",
        ],
        check=True,
        cwd=ROOT,
        env=env,
    )
    children = [
        subprocess.Popen([str(PY), "manage.py", "echoserver", "--port", "9001"], cwd=ROOT, env=env),
        subprocess.Popen(
            [str(PY), "-m", "gateway_site.serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
        ),
    ]
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
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            child.send_signal(signal.SIGINT)
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


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

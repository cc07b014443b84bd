"""Make sure the bench's tools are there: wrk and NGINX from apt, py-spy and aiohttp from PyPI.

apt packages are installed only when running as root (and said so); the Python ones come from
the `bench` extra in pyproject.toml, with its exact pins, into the venv running the bench.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

__all__ = ["ensure_apt_tools", "ensure_bench_extra", "py_spy_path"]

REPO = Path(__file__).resolve().parent.parent


def _apt_install(packages: list[str]) -> bool:
    print(f"bench: installing {' '.join(packages)} with apt-get (running as root) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    quiet = {"stdout": subprocess.DEVNULL, "env": env}
    if subprocess.run(["apt-get", "install", "-y", "-q", *packages], **quiet).returncode == 0:
        return True
    print("bench: apt-get install failed; running apt-get update and retrying", flush=True)
    subprocess.run(["apt-get", "update", "-q"], **quiet)
    return subprocess.run(["apt-get", "install", "-y", "-q", *packages], **quiet).returncode == 0


def ensure_apt_tools() -> None:
    """Install missing wrk/nginx as root; without wrk the bench cannot run at all."""
    missing = [name for name in ("wrk", "nginx") if not _have(name)]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        _apt_install(missing)
    if not _have("wrk"):
        raise SystemExit("bench: wrk is required: run `apt-get install wrk` (as root)")
    if not _have("nginx"):
        print("bench: nginx unavailable; the upstream will be the uvicorn fallback")


def _have(name: str) -> bool:
    return shutil.which(name) is not None or Path(f"/usr/sbin/{name}").exists()


def py_spy_path() -> Path:
    return Path(sys.executable).parent / "py-spy"


def ensure_bench_extra() -> None:
    """pip-install the pinned `bench` extra into this venv when any of it is missing."""
    if importlib.util.find_spec("aiohttp") is not None and py_spy_path().exists():
        return
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    requirements = pyproject["project"]["optional-dependencies"]["bench"]
    print(f"bench: pip-installing the bench extra: {' '.join(requirements)}", flush=True)
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *requirements], check=True)
    importlib.invalidate_caches()

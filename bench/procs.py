"""The bench's child processes: start them pinned, watch their CPU and memory, always stop them.

Every server the bench starts goes through `Children`, which stops them all (SIGTERM to each one's
own process group, then SIGKILL) when the `with` block ends, whether by success, error or Ctrl-C.
Each child also gets PR_SET_PDEATHSIG, so a bench killed with SIGKILL still takes its servers down.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "Child",
    "Children",
    "cpu_pin",
    "cpu_seconds",
    "free_port",
    "peak_rss_mib",
    "reset_peak_rss",
    "rss_mib",
    "wait_http_ok",
    "worker_pids",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def cpu_pin(core: int) -> list[str]:
    """A `taskset` prefix pinning a command to one core, or nothing on a machine without it.

    Pinning keeps the gateway (core 0) and the load generator (core 1) from stealing each other's
    CPU, so requests/s measure the gateway and not the scheduler.
    """
    if os.cpu_count() is None or (os.cpu_count() or 1) <= core:
        print(f"bench: only {os.cpu_count()} CPU(s), not pinning to core {core}")
        return []
    return ["taskset", "-c", str(core)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the bench process dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Children:
    """Owns every server process of one bench run and stops them all on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Child] = []

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def spawn(
        self, name: str, argv: list[str], *, env: dict[str, str], cwd: Path | None = None
    ) -> Child:
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("wb")
        popen = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: Ctrl-C reaches the bench, which stops it
            preexec_fn=_die_with_parent,  # the bench is single-threaded here
        )
        log.close()
        child = Child(name, popen, log_path)
        self.started.append(child)
        return child

    def stop(self, child: Child, timeout: float = 10.0) -> None:
        """SIGTERM the child's process group (a master and its workers), SIGKILL if it lingers."""
        if child.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
            try:
                child.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.popen.wait(timeout=5)
        # Workers left behind by a master that died first share its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        if child in self.started:
            self.started.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self.started)):
            self.stop(child)


def worker_pids(master: int, timeout: float = 30.0) -> list[int]:
    """The direct children of a pre-forking server (gunicorn, nginx): the processes that serve."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids: list[int] = []
        for task in Path(f"/proc/{master}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pids.extend(int(p) for p in task.read_text().split())
        if pids:
            return sorted(pids)
        time.sleep(0.05)
    raise RuntimeError(f"process {master} started no worker within {timeout:.0f}s")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (all their threads), from /proc/<pid>/stat."""
    total = 0
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # The command name (field 2) may contain spaces: split after its closing parenthesis.
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total / CLK_TCK


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss(pids: list[int]) -> bool:
    """Reset VmHWM (writing 5 to clear_refs, Linux 4.0+) so each run reports its own peak."""
    try:
        for pid in pids:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mib(pids: list[int]) -> float:
    """The largest VmHWM (peak resident set) among the processes, in MiB."""
    return max((_status_kib(pid, "VmHWM") for pid in pids), default=0) / 1024


def rss_mib(pid: int) -> float:
    """Current resident set (VmRSS) in MiB: unlike VmHWM it can go down, so a trend shows."""
    return _status_kib(pid, "VmRSS") / 1024


def wait_http_ok(
    url: str, child: Child, *, headers: dict[str, str] | None = None, timeout: float = 60.0
) -> None:
    """Poll until the URL answers 200: a bound port alone does not mean the app is ready."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited early:\n{child.log_tail()}")
        request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (http only)
        try:
            with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:200]!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{child.name} not ready at {url} ({last}):\n{child.log_tail()}")

"""Drive load with wrk (pinned to core 1) and read its results through a Lua `done` hook.

The Lua hook prints one JSON line with the request count, errors and latency percentiles in
microseconds, which is sturdier than parsing wrk's human-readable units ("1.23ms", "2.01s").
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.procs import cpu_pin

__all__ = ["LoadResult", "find_wrk", "finish_wrk", "run_wrk", "start_wrk", "write_lua"]

_MARKER = "BENCH-JSON "
_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}\\n',
    "MARKER", summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


@dataclass
class LoadResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors plus non-2xx/3xx answers
    bytes: int
    raw: dict[str, int]


def find_wrk() -> str | None:
    return shutil.which("wrk")


def write_lua(directory: Path) -> Path:
    path = directory / "report.lua"
    path.write_text(_LUA.replace("MARKER", _MARKER))
    return path


def start_wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    lua: Path,
    headers: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    """Start one wrk run: one thread (it has one core), `connections` keep-alive connections."""
    wrk = find_wrk()
    if wrk is None:
        raise RuntimeError("wrk is not installed: run `apt-get install wrk`")
    argv = [
        *cpu_pin(1),
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",  # wrk takes whole seconds
        "--timeout=10s",
        "--latency",
        f"-s{lua}",
    ]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_wrk(wrk: subprocess.Popen[str], seconds: float) -> LoadResult:
    """Wait for a wrk run (bounded) and parse the line the Lua hook printed."""
    try:
        stdout, stderr = wrk.communicate(timeout=seconds + 60)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    for line in stdout.splitlines():
        if line.startswith(_MARKER):
            return _result(json.loads(line[len(_MARKER) :]))
    raise RuntimeError(f"wrk gave no result:\n{stdout}\n{stderr}")


def run_wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    lua: Path,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    wrk = start_wrk(url, connections=connections, seconds=seconds, lua=lua, headers=headers)
    return finish_wrk(wrk, seconds)


def _result(raw: dict[str, int]) -> LoadResult:
    seconds = raw["duration_us"] / 1e6
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return LoadResult(
        requests=raw["requests"],
        seconds=seconds,
        rps=raw["requests"] / seconds if seconds else 0.0,
        p50_ms=raw["p50"] / 1000,
        p99_ms=raw["p99"] / 1000,
        errors=errors,
        bytes=raw["bytes"],
        raw=raw,
    )

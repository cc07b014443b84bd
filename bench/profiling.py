"""Profile the gateway worker with py-spy while wrk loads the small route, and summarise it.

Choices (see bench/README.md): py-spy `record` at 100 Hz in its default blocking mode (it pauses
the worker for each sample, so stacks are consistent), idle samples off (time blocked in epoll
is not the gateway's cost), no --gil filter, no --native (C frames of uvloop/httptools are
charged to the Python frame that called them, or to the event loop's own frame when the loop
runs C callbacks). The summary counts the event-loop thread (MainThread) only: py-spy's idle
detection misjudges sleeping threads in some VMs (the config refresher and the to_thread pool
showed up as busy), and every request runs on the loop anyway; other threads are listed apart.
The speedscope file opens at https://www.speedscope.app; a folded-stacks file is written too.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Profile", "areas_of", "load_speedscope", "record", "write_folded"]

# Own time is grouped by where the code lives: the first matching fragment of its file path.
AREAS: tuple[tuple[str, str], ...] = (
    ("/routing/", "portier routing"),
    ("/gateway_site/", "portier gateway_site"),
    ("/httpcore/", "httpcore"),
    ("/httpx/", "httpx"),
    ("/h11/", "h11"),
    ("/anyio/", "anyio"),
    ("/sniffio/", "sniffio"),
    ("/aiohttp/", "aiohttp"),
    ("/yarl/", "yarl"),
    ("/multidict/", "multidict"),
    ("/redis/", "redis"),
    ("/jwt/", "jwt"),
    ("/django/", "django"),
    ("/uvicorn/", "uvicorn"),
    ("/uvloop/", "uvloop"),
    ("/logging/", "logging"),
    ("/asyncio/", "asyncio"),
    ("/ssl.py", "ssl"),
    ("/urllib/", "urllib"),
    ("/typing", "typing"),
    ("/enum", "enum"),
    ("/contextlib", "contextlib"),
    ("/site-packages/", "other packages"),
    ("/lib/python3", "stdlib other"),
)


@dataclass
class Profile:
    seconds: float  # sampled (non-idle) seconds of the counted thread(s)
    own: Counter[tuple[str, str]]  # (function, file) -> seconds with it as the leaf
    total: Counter[tuple[str, str]]  # (function, file) -> seconds with it anywhere on the stack
    stacks: Counter[tuple[tuple[str, str], ...]]  # root->leaf -> seconds
    threads: dict[str, float]  # every thread's sampled seconds, counted or not


def record(
    py_spy: Path, pid: int, seconds: int, output: Path, *, rate: int = 100
) -> subprocess.Popen[bytes]:
    """Start `py-spy record` against `pid` in the background; it ends after `seconds`."""
    argv = [
        str(py_spy),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(seconds),
        "--rate",
        str(rate),
        "--format",
        "speedscope",
        "--output",
        str(output),
    ]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def load_speedscope(path: Path, thread: str = '"MainThread"') -> Profile:
    """Aggregate py-spy's speedscope file (weights in seconds) for the threads named `thread`."""
    data = json.loads(path.read_text())
    frames = [(f["name"], f.get("file", "?")) for f in data["shared"]["frames"]]
    own: Counter[tuple[str, str]] = Counter()
    total: Counter[tuple[str, str]] = Counter()
    stacks: Counter[tuple[tuple[str, str], ...]] = Counter()
    threads: dict[str, float] = {}
    seconds = 0.0
    for profile in data["profiles"]:
        weights = profile.get("weights") or [1] * len(profile["samples"])
        threads[profile["name"]] = sum(weights)
        if thread not in profile["name"]:
            continue
        for stack, weight in zip(profile["samples"], weights, strict=True):
            if not stack:
                continue
            named = tuple(frames[i] for i in stack)
            seconds += weight
            own[named[-1]] += weight
            for key in set(named):
                total[key] += weight
            stacks[named] += weight
    return Profile(seconds, own, total, stacks, threads)


def area_of(file: str) -> str:
    for fragment, area in AREAS:
        if fragment in file:
            return area
    return "other"


def areas_of(profile: Profile) -> Counter[str]:
    """Own samples per area: which library the CPU is actually spent in."""
    areas: Counter[str] = Counter()
    for (_, file), count in profile.own.items():
        areas[area_of(file)] += count
    return areas


def short_file(file: str) -> str:
    for marker in ("/site-packages/", "/lib/python3.11/", "/lib/python3.12/", "/work/main/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def write_folded(profile: Profile, path: Path) -> None:
    """Folded stacks (`a;b;c count`, count in milliseconds), for flamegraph.pl or inferno."""
    lines = [
        ";".join(f"{name} ({short_file(file)})" for name, file in stack) + f" {round(count * 1000)}"
        for stack, count in profile.stacks.most_common()
    ]
    path.write_text("\n".join(lines) + "\n")

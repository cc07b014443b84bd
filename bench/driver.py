"""The in-process driver: the gateway's ASGI app called directly, its CPU per request counted.

    python -m bench.driver --path /jwt-rl/small --header "Authorization: Bearer ..." \
        --requests 8000 --rounds 3 --concurrency 50 --out result.json

Run by `bench/run.py --in-process` in the gateway's environment (its database, Redis prefix and
access log, pinned to core 0), against the bench's upstream. On a machine whose speed moves by
15-25 % within minutes, wrk's requests/s compare only inside one run; the CPU this process
spends per request is steadier, because nothing else runs in it: no client, no socket on the
client's side, no HTTP parsing of the request (uvicorn's share, ~12 % of a served request, is
left out). Each request runs in a task of its own, as uvicorn runs it, so per-context state
(asgiref's Local, contextvars) starts afresh every time, as it does when served. Garbage
collections are counted and timed with gc.callbacks.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

__all__ = ["main"]

Scope = dict[str, Any]


class GcClock:
    """Collections per generation and the time spent in them, from gc.callbacks."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = 0.0
        self._started = 0.0
        gc.callbacks.append(self._tick)

    def _tick(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.count[info["generation"]] += 1

    def reading(self) -> tuple[list[int], float]:
        return list(self.count), self.seconds


async def _lifespan(app: Any, kind: str) -> None:
    """Send lifespan.<kind> and wait for its answer, as uvicorn does at start and stop."""
    inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    done = asyncio.get_running_loop().create_future()
    await inbox.put({"type": f"lifespan.{kind}"})

    async def send(message: dict[str, str]) -> None:
        if not done.done():
            done.set_result(message)

    runner = asyncio.create_task(app({"type": "lifespan"}, inbox.get, send))
    answer = await done
    if answer["type"] != f"lifespan.{kind}.complete":
        raise RuntimeError(f"lifespan {kind}: {answer}")
    if kind == "shutdown":
        await runner
    else:
        runner.cancel()  # a fresh lifespan task runs the shutdown


def _scope(path: str, headers: list[tuple[bytes, bytes]]) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _one(app: Any, template: Scope, statuses: dict[int, int]) -> None:
    """One GET, as uvicorn hands it over: the body at once, a disconnect only after the answer."""
    scope = dict(template)
    scope["headers"] = list(template["headers"])
    answered = asyncio.Event()
    body_given = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal body_given
        if not body_given:
            body_given = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif not message.get("more_body", False):
            answered.set()

    await app(scope, receive, send)
    answered.set()
    statuses[status] = statuses.get(status, 0) + 1


async def _round(app: Any, template: Scope, requests: int, concurrency: int) -> dict[str, Any]:
    statuses: dict[int, int] = {}
    left = requests

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            # A task per request: its context is a copy, as a request's is under uvicorn.
            await asyncio.create_task(_one(app, template, statuses))

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "requests": requests,
        "cpu_us_per_request": cpu / requests * 1e6,
        "requests_per_cpu_second": requests / cpu if cpu else None,
        "wall_seconds": wall,
        "statuses": statuses,
    }


async def _drive(args: argparse.Namespace) -> list[dict[str, Any]]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_site.settings")
    from gateway_site.asgi import application

    await _lifespan(application, "startup")
    headers = [(b"host", b"127.0.0.1")]
    for header in args.header:
        name, _, value = header.partition(":")
        headers.append((name.strip().lower().encode(), value.strip().encode()))
    template = _scope(args.path, headers)
    await _round(application, template, args.warmup, args.concurrency)
    clock = GcClock()
    rounds = []
    for _ in range(args.rounds):
        (count, seconds) = clock.reading()
        result = await _round(application, template, args.requests, args.concurrency)
        (count_after, seconds_after) = clock.reading()
        result["gc_collections"] = [b - a for a, b in zip(count, count_after, strict=True)]
        result["gc_us_per_request"] = (seconds_after - seconds) / args.requests * 1e6
        rounds.append(result)
    await _lifespan(application, "shutdown")
    return rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", required=True, help="the gateway path to GET")
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("--requests", type=int, default=8000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1000, help="requests before the first round")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight")
    parser.add_argument("--out", type=Path, required=True, help="where the JSON result goes")
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        rounds = runner.run(_drive(args))
    cpu = [r["cpu_us_per_request"] for r in rounds]
    summary = {
        "path": args.path,
        "concurrency": args.concurrency,
        "rounds": rounds,
        "cpu_us_per_request_min": min(cpu),
        "cpu_us_per_request_median": statistics.median(cpu),
    }
    args.out.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

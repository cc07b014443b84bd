"""The response cache tests' upstream: counts its calls per path, records what it received, and
answers with the status, headers, body and delay a test sets for a path.

By default a path answers 200 with a JSON body naming the call (`{"path", "query", "call",
"lang"}`), so a client can tell a stored answer from a fresh one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import httpx
from django.core.cache import cache
from django_redis import get_redis_connection

from routing.config.publish import VERSION_KEY
from tests.conftest import make_route, make_service, publish
from tests.servers import ServerThread

# Gateway processes are called as one gateway behind a balancer would be: by one Host (the key
# holds the Host, port included, since the upstream sees it as X-Forwarded-Host).
SAME_HOST = {"Host": "gateway.example"}


class CacheUpstream:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.calls: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self.status: dict[str, int] = {}
        self.headers: dict[str, list[tuple[str, str]]] = {}
        self.body: dict[str, bytes] = {}
        self.delay: dict[str, float] = {}
        self.chunked: set[str] = set()  # paths answered in two chunks, without a length

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        path = scope["path"]
        self.calls[path] += 1
        call = self.calls[path]
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.requests.append({"method": scope["method"], "path": path, "headers": headers})
        if path in self.delay:
            await asyncio.sleep(self.delay[path])
        body = self.body.get(path)
        if body is None:
            body = json.dumps(
                {
                    "path": path,
                    "query": scope["query_string"].decode(),
                    "call": call,
                    "lang": headers.get("accept-language", ""),
                    "user": headers.get("x-user-id", ""),
                }
            ).encode()
        out = [(b"content-type", b"application/json")]
        if path not in self.chunked:
            out.append((b"content-length", b"%d" % len(body)))
        if scope["method"] == "HEAD":
            body = b""
        out += [(k.encode(), v.encode()) for k, v in self.headers.get(path, [])]
        status = self.status.get(path, 200)
        await send({"type": "http.response.start", "status": status, "headers": out})
        if path in self.chunked:
            half = len(body) // 2
            await send({"type": "http.response.body", "body": body[:half], "more_body": True})
            body = body[half:]
        await send({"type": "http.response.body", "body": body})


def cached_route(server: ServerThread, path: str, publish_now: bool = True, **cache: Any) -> Any:
    """A prefix route on `path` to `server` caching with `cache` (ttl 60 unless given)."""
    cache.setdefault("ttl", 60)
    route = make_route(make_service(f"svc{path.replace('/', '-')}", server.url), path, cache=cache)
    if publish_now:
        publish()
    return route


def entry_keys() -> list[bytes]:
    """The response cache's keys in Redis (entries, Vary records; not locks)."""
    redis = get_redis_connection("default")
    return [k for k in redis.keys(cache.make_key("rc:*")) if not k.endswith(b":lock")]


def serving_latest(http: httpx.Client, url: str) -> bool:
    """The gateway at `url` serves the configuration last published."""
    return http.get(url + "/health").json()["config"]["token"] == cache.get(VERSION_KEY)


def wait_for(condition: Any, seconds: float = 10.0, step: float = 0.05) -> Any:
    """Poll `condition` until it gives something true (returned), or fail at the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(step)

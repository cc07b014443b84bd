"""How Portier is served: one set of uvicorn options for development, tests and gunicorn.

- httptools is pinned as the HTTP parser, so request framing (Content-Length vs
  Transfer-Encoding) is judged by one known parser; the pipeline re-checks it anyway.
- proxy_headers is off: uvicorn would otherwise trust X-Forwarded-For from 127.0.0.1 and rewrite
  the client address, letting any local hop spoof it. Portier decides whom to trust itself.
- No Server/Date headers or access log from uvicorn: upstream headers pass through unchanged
  and the gateway writes its own access log.

Development: `python -m gateway_site.serve --port 8000`.
Production: `gunicorn -c gateway_site/gunicorn.conf.py gateway_site.asgi:application`.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from uvicorn_worker import UvicornWorker

__all__ = ["UVICORN_OPTIONS", "PortierWorker", "main"]

UVICORN_OPTIONS: dict[str, Any] = {
    "http": "httptools",
    "loop": "uvloop",
    "lifespan": "on",
    "proxy_headers": False,
    "server_header": False,
    "date_header": False,
    "access_log": False,
}


class PortierWorker(UvicornWorker):
    """gunicorn worker class running uvicorn with Portier's options."""

    CONFIG_KWARGS = {k: v for k, v in UVICORN_OPTIONS.items() if k != "access_log"}


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve Portier with uvicorn (one process).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run("gateway_site.asgi:application", host=args.host, port=args.port, **UVICORN_OPTIONS)


if __name__ == "__main__":
    main()

"""How Portier is served: one set of uvicorn options for development, tests and gunicorn.

- httptools is pinned as the HTTP parser, so request framing (Content-Length vs
  Transfer-Encoding) is judged by one known parser; the pipeline re-checks it anyway. Its
  protocol is gateway_site.protocol's subclass, which bounds the time a client may take to send
  a request (slow clients: 408, connection closed).
- proxy_headers is off: uvicorn would otherwise trust X-Forwarded-For from 127.0.0.1 and rewrite
  the client address, letting any local hop spoof it. Portier decides whom to trust itself.
- WebSockets: websockets' sans-I/O protocol, subclassed (gateway_site.ws_protocol) to close with
  1001 on shutdown and to bound messages by PORTIER_WEBSOCKET_MAX_MESSAGE_BYTES.
- No Server/Date headers or access log from uvicorn: upstream headers pass through unchanged
  and the gateway writes its own access log.
- Shutdown (SIGTERM): stop accepting, let in-flight requests finish for drain_seconds(), cut the
  rest, run lifespan shutdown (gateway_site.asgi), exit 0; all within PORTIER_GRACEFUL_TIMEOUT.

Development: `python -m gateway_site.serve --port 8000`.
Production: `portier serve` (gunicorn with gateway_site/gunicorn.conf.py and PortierWorker).
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType
from typing import Any

import uvicorn
from uvicorn_worker import UvicornWorker

from gateway_site.env import env_int
from gateway_site.protocol import PortierHttpProtocol
from gateway_site.ws_protocol import PortierWebSocketProtocol

__all__ = ["UVICORN_OPTIONS", "PortierWorker", "drain_seconds", "main"]

UVICORN_OPTIONS: dict[str, Any] = {
    "http": PortierHttpProtocol,
    "ws": PortierWebSocketProtocol,
    "loop": "uvloop",
    "lifespan": "on",
    "proxy_headers": False,
    "server_header": False,
    "date_header": False,
    "access_log": False,
}


def drain_seconds(graceful_timeout: int) -> int:
    """Seconds in-flight requests may run on after SIGTERM: the graceful timeout less a margin
    (a quarter of it, 1 to 5 s) for lifespan shutdown to close the pools and flush the counts.
    Requests still running then are cut, so the process ends within the graceful timeout by
    itself, before gunicorn's master (or the orchestrator) kills it and skips that cleanup."""
    if graceful_timeout <= 0:
        return 0
    return graceful_timeout - min(5, max(1, graceful_timeout // 4))


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    """SIGTERM outside uvicorn's own handler. uvicorn re-raises the signal it shut down on once
    it is done; the default action would end the process right there, skipping atexit (the log
    writer's last lines) and reporting death by signal. Exit normally instead."""
    sys.exit(0)


class PortierWorker(UvicornWorker):
    """gunicorn worker class running uvicorn with Portier's options and gunicorn's deadline.

    uvicorn-worker 0.4 passes max_requests (with gunicorn's jitter) on to uvicorn, but not
    graceful_timeout: uvicorn would wait for in-flight requests for ever, the master would
    SIGKILL the worker at the deadline, and lifespan shutdown would never run.
    """

    CONFIG_KWARGS = {k: v for k, v in UVICORN_OPTIONS.items() if k != "access_log"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.timeout_graceful_shutdown = drain_seconds(self.cfg.graceful_timeout)

    def init_signals(self) -> None:
        super().init_signals()
        signal.signal(signal.SIGTERM, _exit_cleanly)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve Portier with uvicorn (one process).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        "gateway_site.asgi:application",
        host=args.host,
        port=args.port,
        timeout_graceful_shutdown=drain_seconds(env_int("PORTIER_GRACEFUL_TIMEOUT", 30)),
        **UVICORN_OPTIONS,
    )


if __name__ == "__main__":
    main()

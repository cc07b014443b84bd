"""Run the echo upstream (routing.management.echo_upstream) for the demo: `manage.py echoserver`."""

from __future__ import annotations

from typing import Any

import uvicorn
from django.core.management.base import BaseCommand

from routing.management.echo_upstream import EchoUpstream


class Command(BaseCommand):
    help = "Run a small echo upstream for the demo configuration (127.0.0.1 unless --host)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=9001)
        parser.add_argument("--name", default="demo-echo")

    def handle(self, *args: Any, host: str, port: int, name: str, **options: Any) -> None:
        uvicorn.run(EchoUpstream(name), host=host, port=port, log_level="warning")

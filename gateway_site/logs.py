"""How every log line is written: JSON objects (LOG_FORMAT=json) or key=value text (console),
handed to a background thread so a slow stdout never blocks the event loop.

settings.LOGGING names `queued_stdout` as the one root handler. Records are queued as they are;
the listener thread formats and writes them, so JSON encoding is off the event loop as well.
A record whose message is a dict (the access log's) becomes that object's fields.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _BaseJsonFormatter

__all__ = ["ConsoleFormatter", "JsonFormatter", "queued_stdout"]


class JsonFormatter(_BaseJsonFormatter):
    """`{"time", "level", "logger", "message"?, ...fields}` on one line."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            # uvicorn's copy of each message with terminal colours
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],
            **kwargs,
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = _iso_time(record)
        super().add_fields(log_data, record, message_dict)
        if not log_data.get("message"):  # a dict record: its fields say it all
            log_data.pop("message", None)


class ConsoleFormatter(logging.Formatter):
    """Readable lines for development: `time LEVEL logger message key=value ...`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s", **kwargs)

    def formatMessage(self, record: logging.LogRecord) -> str:
        if isinstance(record.msg, dict):
            record.message = " ".join(
                f"{key}={_console_value(value)}" for key, value in record.msg.items()
            )
        return super().formatMessage(record)


def _iso_time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")


def _console_value(value: object) -> str:
    text = "-" if value is None or value == "" else str(value)
    return f'"{text}"' if " " in text or '"' in text else text


class _DeferredQueueHandler(QueueHandler):
    """Queues records unformatted: the listener's handler formats them in its own thread.

    The stdlib QueueHandler formats in the caller (on the event loop); binding %-arguments now
    is enough to keep the message as it was when logged.
    """

    def __init__(self, target: logging.Handler) -> None:
        super().__init__(queue.SimpleQueue())
        self.listener = QueueListener(self.queue, target)
        self.listener.start()
        os.register_at_fork(after_in_child=self._restart_in_child)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.args and not isinstance(record.msg, dict):
            record.msg = record.getMessage()
            record.args = None
        return record

    def close(self) -> None:
        # logging.shutdown() closes handlers at exit: write out what is still queued first.
        if self.listener._thread is not None:
            self.listener.stop()
        super().close()

    def _restart_in_child(self) -> None:
        # After a fork (gunicorn --preload) the parent's thread does not exist in the child.
        if self.listener._thread is None:  # closed before the fork
            return
        self.queue = self.listener.queue = queue.SimpleQueue()
        self.listener._thread = None
        self.listener.start()


def queued_stdout(log_format: str = "json") -> QueueHandler:
    """The root handler (a logging.config factory): a queue drained to stdout by a thread.

    Python 3.12's dictConfig "queue" handlers would do this; on 3.11 the listener is started
    here, and stopped (queue drained) when logging shuts down at exit.
    """
    if log_format not in {"json", "console"}:
        raise ValueError(f"log format must be 'json' or 'console', got {log_format!r}")
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(JsonFormatter() if log_format == "json" else ConsoleFormatter())
    return _DeferredQueueHandler(stream)

"""The access log end to end: one JSON object per request, with who/what/how long, no secrets."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import jwt
import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from pythonjsonlogger.core import BaseJsonFormatter

from accounts.models import User
from accounts.services import api_key_issue
from gateway_site.logs import BatchedStdoutHandler, ConsoleFormatter, JsonFormatter
from tests.conftest import make_route, make_service, publish, received

pytestmark = pytest.mark.django_db(transaction=True)

FIELDS = {
    "time",
    "level",
    "logger",
    "request_id",
    "trace_id",
    "span_id",
    "route",
    "service",
    "target",
    "method",
    "path",
    "status",
    "outcome",
    "latency_ms",
    "upstream_ms",
    "bytes_in",
    "bytes_out",
    "user_id",
    "key_prefix",
    "auth_method",
    "client_ip",
    "cache",
}


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def wait(self, count: int) -> list[dict]:
        """The first `count` lines, parsed: each is written just after its answer was sent."""
        deadline = time.monotonic() + 5
        while len(self.lines) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.lines) >= count
        for line in self.lines:
            assert "\n" not in line
        return [json.loads(line) for line in self.lines[:count]]


@contextmanager
def capture_access_log() -> Iterator[_Lines]:
    """The gateway's access-log records, formatted by the same JSON formatter as stdout's."""
    handler = _Lines()
    logger = logging.getLogger("portier.access")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def access_log() -> Iterator[_Lines]:
    with capture_access_log() as lines:
        yield lines


def access_token(user_id: int) -> str:
    claims = {"user_id": user_id, "roles": ["doctor"], "token_type": "access"}
    claims["exp"] = int(time.time()) + 300
    return jwt.encode(claims, settings.PORTIER_JWT_SIGNING_KEY, algorithm="HS256")


def test_it_writes_one_json_object_per_request_with_every_field(client, upstream, access_log):
    make_route(make_service("users", upstream.url), "/users", name="users-route")
    publish()

    response = client.post(
        "/users/42?b=2", content=b"hello", headers={"X-Request-ID": "req-1", "X-Forwarded-For": "x"}
    )

    assert response.status_code == 200
    (line,) = access_log.wait(1)
    assert set(line) == FIELDS
    assert line["level"] == "INFO"
    assert line["logger"] == "portier.access"
    assert line["time"].endswith("+00:00")
    assert line["request_id"] == "req-1" == response.headers["x-request-id"]
    assert len(line["trace_id"]) == 32
    assert (line["route"], line["service"], line["target"]) == (
        "users-route",
        "users",
        upstream.url,
    )
    assert (line["method"], line["path"]) == ("POST", "/users/42?b=2")
    assert (line["status"], line["outcome"]) == (200, "ok")
    assert line["latency_ms"] >= line["upstream_ms"] > 0
    assert line["bytes_in"] == 5
    assert line["bytes_out"] == len(response.content)
    assert line["client_ip"] == "127.0.0.1"  # X-Forwarded-For from an untrusted peer is ignored
    assert (line["user_id"], line["key_prefix"], line["auth_method"]) == (None, None, None)


def test_it_never_logs_tokens_cookies_or_secret_query_values(client, upstream, access_log):
    make_route(make_service("users", upstream.url), "/users", forward_authorization=True)
    publish()
    raw = access_token(user_id=7)

    response = client.get(
        "/users/1?password=hunter2-pw&token=tok-zz9&x=visible",
        headers={"Authorization": f"Bearer {raw}", "Cookie": "sessionid=cookie-42-secret"},
    )

    assert response.status_code == 200
    (line,) = access_log.wait(1)
    text = access_log.lines[0]
    for secret in (raw, raw.split(".")[2], "hunter2-pw", "tok-zz9", "cookie-42-secret", "Bearer"):
        assert secret not in text
    assert line["path"] == "/users/1?password=[REDACTED]&token=[REDACTED]&x=visible"
    assert (line["user_id"], line["auth_method"], line["key_prefix"]) == ("7", "jwt", None)


def test_it_names_an_api_key_caller_by_key_prefix_only(client, upstream, access_log):
    owner = User.objects.create_user("svc", password="pw-never-logged")
    owner.groups.add(Group.objects.get_or_create(name="ops")[0])
    api_key, key = api_key_issue(owner=owner, name="ci")
    make_route(make_service("ops", upstream.url), "/ops")
    publish()

    response = client.get("/ops/x?api_key=k9-secret", headers={"X-API-Key": key})

    assert response.status_code == 200
    (line,) = access_log.wait(1)
    text = access_log.lines[0]
    assert key not in text
    assert key.rsplit(".", 1)[1] not in text
    assert "k9-secret" not in text
    assert "pw-never-logged" not in text
    assert line["key_prefix"] == api_key.prefix
    assert line["user_id"] == str(owner.pk)
    assert line["auth_method"] == "api_key"


def test_it_logs_a_refused_request_with_its_error_code(client, upstream, access_log):
    make_route(make_service("users", upstream.url), "/users")
    publish()

    response = client.get("/nowhere", headers={"X-Request-ID": "bad id <junk>"})

    assert response.status_code == 404
    (line,) = access_log.wait(1)
    assert (
        line["request_id"]
        == response.headers["x-request-id"]
        == response.json()["error"]["request_id"]
    )
    assert line["request_id"] != "bad id <junk>"
    assert (line["status"], line["outcome"]) == (404, "route_not_found")
    assert (line["route"], line["target"], line["upstream_ms"]) == (None, None, None)
    assert received(upstream) == []


def test_other_log_lines_are_json_objects_too():
    record = logging.LogRecord(
        "portier.forward", logging.WARNING, __file__, 1, "up %s", ("a",), None
    )

    line = json.loads(JsonFormatter().format(record))

    assert {k: line[k] for k in ("level", "logger", "message")} == {
        "level": "WARNING",
        "logger": "portier.forward",
        "message": "up a",
    }


def test_a_dict_line_written_straight_is_the_line_the_json_library_writes():
    """The access log's dict lines skip python-json-logger's field merging; the line must not
    change for it, and anything the fast path does not write (extra fields, an exception) still
    reaches the line."""
    fields = {"request_id": "r1", "route": None, "latency_ms": 1.5, "status": 200}
    plain = logging.LogRecord("portier.access", logging.INFO, __file__, 1, fields, None, None)
    formatter = JsonFormatter()

    line = formatter.format(plain)

    assert line == BaseJsonFormatter.format(formatter, plain)
    assert list(json.loads(line)) == ["time", "level", "logger", *fields]
    with_extra = logging.makeLogRecord({**plain.__dict__, "tenant": "acme"})
    assert json.loads(formatter.format(with_extra))["tenant"] == "acme"
    for renamed in ({"name": "x"}, {"levelname": "y"}, {"message": ""}, {"message": "m"}):
        record = logging.LogRecord("portier.x", logging.INFO, __file__, 1, renamed, None, None)
        assert formatter.format(record) == BaseJsonFormatter.format(formatter, record), renamed
    try:
        raise ValueError("boom")
    except ValueError:
        failing = logging.LogRecord(
            "portier.access", logging.ERROR, __file__, 1, fields, None, sys.exc_info()
        )
    assert "ValueError: boom" in json.loads(formatter.format(failing))["exc_info"]
    assert fields == {"request_id": "r1", "route": None, "latency_ms": 1.5, "status": 200}


def test_the_console_format_writes_key_value_fields():
    fields = {"request_id": "r1", "route": None, "path": "/a b", "status": 200}
    record = logging.LogRecord("portier.access", logging.INFO, __file__, 1, fields, None, None)

    line = ConsoleFormatter().format(record)

    assert line.endswith('INFO portier.access request_id=r1 route=- path="/a b" status=200')


def test_the_root_handler_writes_on_a_thread_of_its_own():
    assert any(isinstance(h, BatchedStdoutHandler) for h in logging.getLogger().handlers)
    writers: list[str] = []

    class Stream(io.StringIO):
        def write(self, text: str) -> int:
            writers.append(threading.current_thread().name)
            return super().write(text)

    stream = Stream()
    handler = BatchedStdoutHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("portier.test.batched")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("slow %s", "stdout", extra={"request_id": "r9"})
        deadline = time.monotonic() + 5
        while not stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        handler.close()

    line = json.loads(stream.getvalue())
    assert (line["message"], line["request_id"]) == ("slow stdout", "r9")
    assert writers == ["portier-log-writer"]


def test_lines_waiting_at_exit_are_written_not_lost():
    stream = io.StringIO()
    handler = BatchedStdoutHandler(stream)
    handler.setFormatter(JsonFormatter())
    record = logging.LogRecord("portier.t", logging.INFO, __file__, 1, "last words", None, None)
    for _ in range(3):
        handler.handle(record)

    handler.close()  # as logging.shutdown() does at exit

    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == [
        "last words"
    ] * 3


def test_a_stdout_that_does_not_keep_up_drops_lines_and_says_so(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(BatchedStdoutHandler, "MAX_PENDING", 2)
    monkeypatch.setattr(BatchedStdoutHandler, "INTERVAL", 60.0)  # no batch until close
    handler = BatchedStdoutHandler(stream)
    handler.setFormatter(JsonFormatter())
    record = logging.LogRecord("portier.t", logging.INFO, __file__, 1, "line", None, None)
    for _ in range(5):
        handler.handle(record)

    handler.close()

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines[:2]] == ["line", "line"]
    assert lines[2]["message"] == "3 log lines dropped: stdout is not keeping up"
    assert len(lines) == 3


@pytest.mark.parametrize(
    ("env", "message"),
    [({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be 'json' or 'console'")],
)
def test_a_bad_log_format_stops_the_start(env, message):
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={"DJANGO_SETTINGS_MODULE": "gateway_site.settings", "PATH": "", **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=settings.BASE_DIR,
    )

    assert result.returncode != 0
    assert message in result.stderr


def test_a_caching_routes_lines_say_what_the_cache_did(client, upstream, access_log):
    make_route(make_service("cached", upstream.url), "/cached", cache={"ttl": 60})
    publish()

    first = client.get("/cached/a")
    second = client.get("/cached/a")
    third = client.post("/cached/a", content=b"x")

    assert [r.headers["x-cache"] for r in (first, second, third)] == ["MISS", "HIT", "BYPASS"]
    lines = access_log.wait(3)
    assert [line["cache"] for line in lines] == ["MISS", "HIT", "BYPASS"]
    assert lines[1]["target"] is None and lines[1]["bytes_out"] == len(second.content)

"""`manage.py portier_export` and `portier_import`: what an operator running them from CI sees,
and the exit status a pipeline acts on."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from routing.api.document import document_dump, document_export
from routing.config import publish
from routing.config.holder import holder
from routing.models import ConfigRevision, ConfigVersion, Route, Service
from tests.conftest import make_route, make_service

pytestmark = pytest.mark.django_db(transaction=True)

DOCUMENT = """\
version: 1
services:
  - name: users
    targets:
      - url: http://127.0.0.1:3002
    retries: 2
routes:
  - name: users
    service: users
    path: /api/v1/users
    strip_prefix: true
"""


def run(*args: str, stdin: str | None = None, monkeypatch: pytest.MonkeyPatch | None = None):
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None and monkeypatch is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def version() -> int:
    return ConfigVersion.objects.filter(pk=1).values_list("number", flat=True).first() or 0


def test_export_writes_the_document_to_stdout_or_a_file(tmp_path: Path):
    service = make_service("users", "http://127.0.0.1:3002")
    make_route(service, "/api/v1/users", name="users")

    out, _ = run("portier_export")
    run("portier_export", "-o", str(tmp_path / "portier.yaml"))

    assert out == document_dump(document_export())
    assert "  - name: users\n" in out
    assert (tmp_path / "portier.yaml").read_text() == out


def test_import_prints_the_diff_and_publishes_one_version(tmp_path: Path):
    path = tmp_path / "portier.yaml"
    path.write_text(DOCUMENT)
    before = version()

    out, _ = run("portier_import", str(path))

    assert "+ services/users\n+ routes/users\n" in out
    assert f"Applied: version {before + 1} published." in out
    assert version() == before + 1
    assert Route.objects.get(name="users").strip_prefix is True


def test_import_comment_shows_on_the_version_in_the_timeline(tmp_path: Path, admin_client):
    path = tmp_path / "portier.yaml"
    path.write_text(DOCUMENT)

    run("portier_import", str(path), "--comment", "users API from the release pipeline")

    revision = ConfigRevision.objects.order_by("-number").first()
    assert revision.source == "import"
    assert revision.comment == "users API from the release pipeline"
    timeline = admin_client.get("/admin/routing/configrevision/").content.decode()
    assert "users API from the release pipeline" in timeline


def test_importing_again_changes_nothing_and_publishes_nothing(tmp_path: Path):
    path = tmp_path / "portier.yaml"
    path.write_text(DOCUMENT)
    run("portier_import", str(path))
    before = version()

    out, _ = run("portier_import", str(path))

    assert out == "no changes\nNothing to change: no version published.\n"
    assert version() == before


def test_dry_run_prints_the_diff_field_by_field_and_changes_nothing(tmp_path: Path):
    path = tmp_path / "portier.yaml"
    path.write_text(DOCUMENT)
    run("portier_import", str(path))
    path.write_text(DOCUMENT.replace("retries: 2", "retries: 3"))
    make_service("orphan", "http://127.0.0.1:3009")
    before = version()

    out, _ = run("portier_import", str(path), "--dry-run", "--prune")

    assert out == (
        "~ services/users.retries: 2 -> 3\n- services/orphan\nDry run: nothing was changed.\n"
    )
    assert version() == before
    assert Service.objects.get(name="users").retries == 2
    assert Service.objects.filter(name="orphan").exists()


def test_prune_removes_what_the_file_lacks(tmp_path: Path):
    path = tmp_path / "portier.yaml"
    path.write_text(DOCUMENT)
    orphan = make_service("orphan", "http://127.0.0.1:3009")
    make_route(orphan, "/orphan", name="orphan")

    out, _ = run("portier_import", str(path), "--prune")

    assert "- routes/orphan\n- services/orphan\n" in out
    assert list(Service.objects.values_list("name", flat=True)) == ["users"]


def test_a_bad_document_exits_non_zero_with_every_error_and_changes_nothing(tmp_path: Path):
    path = tmp_path / "portier.yaml"
    path.write_text(
        DOCUMENT.replace("retries: 2", "retries: two").replace("service: users", "service: usr")
    )
    before = version()
    err = io.StringIO()

    with pytest.raises(CommandError) as refused:
        call_command("portier_import", str(path), stdout=io.StringIO(), stderr=err)

    assert str(refused.value) == f"{path}: 2 error(s); nothing was changed."
    assert err.getvalue().splitlines() == [
        "services[0].retries: expected an integer",
        "routes[0].service: unknown service 'usr': no such service in the document or the database",
    ]
    assert not Service.objects.exists()
    assert version() == before


def test_an_import_the_cache_cannot_publish_fails_loudly(tmp_path: Path):
    """Saved but not served: CI must not go green while gateways serve the old version."""
    path = tmp_path / "portier.yaml"
    path.write_text(DOCUMENT)
    was_running = holder.running
    holder.stop()  # this process's refresher would publish the owed change behind our back
    dead = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        }
    }
    try:
        with override_settings(CACHES=dead), pytest.raises(CommandError, match="not published"):
            run("portier_import", str(path))
    finally:
        publish.publish_owed = False
        if was_running:
            holder.start()

    assert Service.objects.filter(name="users").exists()


def test_a_syntax_error_or_a_missing_file_is_refused(tmp_path: Path):
    path = tmp_path / "portier.yaml"
    path.write_text("version: 1\nservices: [\n")

    with pytest.raises(CommandError):
        run("portier_import", str(path))
    with pytest.raises(CommandError, match="cannot read it"):
        run("portier_import", str(tmp_path / "missing.yaml"))


def test_import_reads_stdin_for_a_dash(monkeypatch: pytest.MonkeyPatch):
    out, _ = run("portier_import", "-", stdin=DOCUMENT, monkeypatch=monkeypatch)

    assert "+ services/users" in out
    assert Service.objects.filter(name="users").exists()


def test_the_commands_exit_non_zero_from_a_shell(tmp_path: Path):
    """What CI sees: manage.py's exit status (CommandError -> 1, its message on stderr)."""
    import subprocess
    import sys

    path = tmp_path / "portier.yaml"
    path.write_text("version: 1\nroutes: [\n")  # refused before the database is read
    manage = Path(__file__).resolve().parents[3] / "manage.py"

    done = subprocess.run(
        [sys.executable, str(manage), "portier_import", str(path), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1
    assert "(document): line 3, column 1: not valid YAML or JSON" in done.stderr
    assert "1 error(s); nothing was changed." in done.stderr

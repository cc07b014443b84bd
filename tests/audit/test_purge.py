"""`manage.py audit_purge`: deletes only rows past the retention period, in batches, from cron."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEntry
from tests.audit.conftest import make_entry, save_entries

pytestmark = pytest.mark.django_db


def aged(request_id: str, **age: float) -> AuditEntry:
    return make_entry(request_id=request_id, created_at=timezone.now() - timedelta(**age))


def purge(*args: str) -> str:
    out = io.StringIO()
    call_command("audit_purge", *args, stdout=out)
    return out.getvalue()


def remaining() -> set[str]:
    return set(AuditEntry.objects.values_list("request_id", flat=True))


def test_it_removes_only_rows_older_than_the_cutoff():
    save_entries(aged("old", days=31), aged("older", days=400), aged("recent", days=29))

    output = purge("--older-than", "30d")

    assert remaining() == {"recent"}
    assert output.startswith("Removed 2 audit entries older than ")


def test_it_takes_hours():
    save_entries(aged("stale", hours=13), aged("fresh", hours=11))

    purge("--older-than", "12h")

    assert remaining() == {"fresh"}


def test_it_defaults_to_the_retention_setting(settings):
    settings.PORTIER_AUDIT_RETENTION_DAYS = 7
    save_entries(aged("past", days=8), aged("kept", days=6))

    purge()

    assert remaining() == {"kept"}


def test_it_deletes_in_batches_until_none_is_left():
    save_entries(*(aged(f"old-{i}", days=100) for i in range(12)), aged("new", days=1))

    with CaptureQueriesContext(connection) as queries:
        output = purge("--older-than", "90d", "--batch-size", "5")

    deletes = [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith("DELETE")]
    assert len(deletes) == 3  # 5 + 5 + 2
    assert remaining() == {"new"}
    assert output.startswith("Removed 12 audit entries")


def test_running_it_again_removes_nothing():
    save_entries(aged("old", days=100), aged("new", days=1))
    purge("--older-than", "90d")

    output = purge("--older-than", "90d")

    assert output.startswith("Removed 0 audit entries")
    assert remaining() == {"new"}


@pytest.mark.parametrize("age", ["90", "0d", "-1d", "3w", "d"])
def test_it_refuses_an_unclear_age(age):
    save_entries(aged("old", days=100))

    with pytest.raises(CommandError, match="90d, 12h"):
        purge(f"--older-than={age}")

    assert remaining() == {"old"}

"""Delete audit rows older than the retention period: `manage.py audit_purge [--older-than 90d]`.

Meant for cron: no prompt, and running it twice removes nothing more. Rows go in batches of ids,
so no single DELETE holds locks on (or writes WAL for) the whole backlog at once.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from audit.models import AuditEntry

_AGE_RE = re.compile(r"^([1-9]\d*)([dh])$")


def parse_age(value: str) -> timedelta:
    """90d or 12h."""
    found = _AGE_RE.match(value.strip())
    if not found:
        raise CommandError(
            f"--older-than takes a number of days or hours (90d, 12h), not {value!r}"
        )
    count, unit = int(found[1]), found[2]
    return timedelta(days=count) if unit == "d" else timedelta(hours=count)


class Command(BaseCommand):
    help = "Delete audit entries older than the retention period (PORTIER_AUDIT_RETENTION_DAYS)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            help="Age of the rows to delete, e.g. 90d or 12h "
            "(default: PORTIER_AUDIT_RETENTION_DAYS days).",
        )
        parser.add_argument("--batch-size", type=int, default=5000, help="Rows per DELETE.")

    def handle(self, *args: Any, older_than: str | None, batch_size: int, **options: Any) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        if older_than is None:
            age = timedelta(days=settings.PORTIER_AUDIT_RETENTION_DAYS)
        else:
            age = parse_age(older_than)
        cutoff = timezone.now() - age
        removed = 0
        while True:
            ids = list(
                AuditEntry.objects.filter(created_at__lt=cutoff)
                .order_by()
                .values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                break
            removed += AuditEntry.objects.filter(pk__in=ids).delete()[0]
        self.stdout.write(
            f"Removed {removed} audit entries older than {cutoff:%Y-%m-%d %H:%M:%S %Z}."
        )

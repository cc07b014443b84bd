"""Apply a declarative document (docs/configuration.md) in one transaction.

The diff is printed first; a document with any error changes nothing. One configuration version
is published when something changed, none when the database already matches the document.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from routing.api.document import DocumentInvalid, document_apply, document_load
from routing.models import ConfigVersion


class Command(BaseCommand):
    help = "Apply a configuration document (YAML or JSON; FILE may be - for stdin)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("file", metavar="FILE", help="The document, or - for stdin.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Print the changes; change nothing."
        )
        parser.add_argument(
            "--prune", action="store_true", help="Also remove what the document does not list."
        )
        parser.add_argument(
            "--comment",
            default="",
            help="Why: shown with the published version in the configuration timeline.",
        )

    def handle(
        self, *args: Any, file: str, dry_run: bool, prune: bool, comment: str, **options: Any
    ) -> None:
        text = self._read(file)
        try:
            document = document_load(text)
            before = _version()
            changes = document_apply(document, prune=prune, dry_run=dry_run, comment=comment)
        except DocumentInvalid as exc:
            for error in exc.errors:
                self.stderr.write(error)
            raise CommandError(f"{file}: {len(exc.errors)} error(s); nothing was changed.") from exc
        self.stdout.write(changes.as_text())
        if dry_run:
            self.stdout.write("Dry run: nothing was changed.")
        elif changes.is_empty():
            self.stdout.write("Nothing to change: no version published.")
        else:
            after = _version()
            if after != before:
                self.stdout.write(self.style.SUCCESS(f"Applied: version {after} published."))
            else:
                # The publish failed after the commit (the cache did not answer; Django logged
                # it). This process's holder would retry it, but a command exits: say so, and
                # fail, so CI notices that gateways still serve the previous version.
                raise CommandError(
                    "The changes are saved but were not published: the cache did not answer. "
                    "Once it does, publish them with: manage.py shell -c "
                    "'from routing.config.publish import config_publish; config_publish()'"
                )

    def _read(self, file: str) -> str:
        if file == "-":
            return sys.stdin.read()
        try:
            return Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"{file}: cannot read it ({exc}).") from exc


def _version() -> int:
    return ConfigVersion.objects.filter(pk=1).values_list("number", flat=True).first() or 0

"""Write the whole configuration as the declarative document (docs/configuration.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand

from routing.api.document import document_dump, document_export


class Command(BaseCommand):
    help = "Write the configuration as one YAML document (stdout, or -o FILE)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "-o", "--output", metavar="FILE", help="Write to FILE instead of stdout."
        )

    def handle(self, *args: Any, output: str | None, **options: Any) -> None:
        text = document_dump(document_export())
        if output and output != "-":
            Path(output).write_text(text, encoding="utf-8")
            self.stderr.write(f"Configuration written to {output}.")
        else:
            self.stdout.write(text, ending="")

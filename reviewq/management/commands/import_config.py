from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from reviewq.config.import_export import import_config
from reviewq.errors import ApplicationError


class Command(BaseCommand):
    help = "Apply a configuration written by export_config (all of it, or nothing)."

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("file")

    def handle(self, *args, **options) -> None:  # type: ignore[no-untyped-def]
        try:
            config = json.loads(Path(options["file"]).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CommandError(f"cannot read {options['file']}: {exc}") from exc
        try:
            counts = import_config(config)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(", ".join(f"{count} {kind}" for kind, count in counts.items()) + " applied")

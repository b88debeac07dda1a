from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand

from reviewq.config.import_export import export_config


class Command(BaseCommand):
    help = "Write tools, risk and escalation policies and the model registry to a JSON file."

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("file", help="Where to write the JSON ('-' for standard output).")

    def handle(self, *args, **options) -> None:  # type: ignore[no-untyped-def]
        text = json.dumps(export_config(), indent=2, sort_keys=True) + "\n"
        if options["file"] == "-":
            self.stdout.write(text, ending="")
            return
        Path(options["file"]).write_text(text)
        self.stdout.write(f"wrote {options['file']}")

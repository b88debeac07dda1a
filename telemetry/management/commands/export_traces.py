"""``manage.py export_traces``: golden traces to a JSONL file and its manifest (telemetry/exports.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from reviewq.errors import ApplicationError
from reviewq.models import GoldenTrace
from telemetry import exports


class Command(BaseCommand):
    help = (
        "Export golden traces as JSONL: sft (chat fine-tuning), dpo (preference pairs) or raw, "
        "with FILE.manifest.json beside the file."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=exports.FORMATS, default="sft")
        parser.add_argument("--since", help="ISO date or datetime: traces decided at or after it (UTC)")
        parser.add_argument("--tool", help="only traces whose proposal or final action calls this tool")
        parser.add_argument("--decision", choices=exports.DECISIONS)
        parser.add_argument(
            "--redact", action="store_true", help="replace detected PII with placeholders like <EMAIL_1>"
        )
        parser.add_argument("--out", required=True, help="the JSONL file to write")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            export = exports.export_options(
                format=options["format"],
                since=options["since"],
                tool=options["tool"],
                decision=options["decision"],
                redact=options["redact"],
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        out = Path(options["out"])
        if not out.parent.is_dir():
            raise CommandError(f"{out.parent} is not a directory")
        queryset = GoldenTrace.objects.all()
        total = exports.select_traces(queryset, export).count()
        # The bar goes to stderr and hides itself when stderr is not a terminal (or with -v 0).
        with tqdm(
            total=total, unit="trace", file=sys.stderr, disable=None if options["verbosity"] else True
        ) as bar:
            manifest = exports.export_to_file(queryset, export, out, progress=bar.update)
        self.stdout.write(
            f"{manifest['lines']} lines written to {out} (manifest: {exports.manifest_path(out)})"
        )

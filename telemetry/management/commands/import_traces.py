"""``manage.py import_traces FILE.jsonl``: a team's LLM logs imported as upstream calls
(telemetry/imports.py), with a progress bar and a summary of what was skipped and why."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from reviewq.errors import ApplicationError
from telemetry.imports import import_traces


class Command(BaseCommand):
    help = (
        "Import OpenAI chat-format JSONL (messages and tools, the last message the LLM's answer) as "
        "logged upstream LLM calls. Importing a file twice adds nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the JSONL file (one conversation per line)")
        parser.add_argument(
            "--all-or-nothing", action="store_true", help="import nothing if any line is invalid"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"{path} is not a file")
        with (
            path.open("rb") as lines,
            tqdm(
                total=path.stat().st_size,
                unit="B",
                unit_scale=True,
                file=sys.stderr,
                disable=None if options["verbosity"] else True,
            ) as bar,
        ):

            def counted() -> Any:
                for line in lines:
                    bar.update(len(line))
                    yield line

            try:
                summary = import_traces(counted(), all_or_nothing=options["all_or_nothing"])
            except ApplicationError as exc:
                raise CommandError(exc.message) from None
        skipped = sum(summary.skipped.values())
        self.stdout.write(
            f"{summary.imported} calls imported from {summary.lines} lines: "
            f"{summary.duplicates} already known, {skipped} skipped"
        )
        for error in summary.errors:
            self.stdout.write(f"  line {error['line']}: {error['error']}")
        if skipped > len(summary.errors):
            self.stdout.write(f"  ... and {skipped - len(summary.errors)} more")
        if summary.imported:
            self.stdout.write("Compare the small model with them: manage.py compare_upstream_calls")
        if options["verbosity"] > 1:
            self.stdout.write(json.dumps(summary.as_dict()))

from __future__ import annotations

from argparse import ArgumentParser, ArgumentTypeError
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from telemetry.retention import DEFAULT_BATCH_SIZE, telemetry_prune


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ArgumentTypeError("must be at least 1")
    return number


def _not_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ArgumentTypeError("must not be negative")
    return number


class Command(BaseCommand):
    help = (
        "Delete model calls and finished requests older than the retention period, in batches. "
        "Requests with golden traces, a pending review or an undelivered webhook are kept."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--days",
            type=_not_negative,
            default=None,
            help="Keep this many days (default: TELEMETRY_RETENTION_DAYS, "
            f"now {settings.TELEMETRY_RETENTION_DAYS}).",
        )
        parser.add_argument("--batch-size", type=_positive, default=DEFAULT_BATCH_SIZE)
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )
        parser.add_argument(
            "--include-traces",
            action="store_true",
            help="Also delete old requests that have golden traces (training data; kept by default).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = options["verbosity"]

        def progress(kind: str, deleted: int) -> None:
            if verbosity > 1:
                self.stdout.write(f"  {kind}: {deleted} deleted so far")

        result = telemetry_prune(
            days=options["days"],
            batch_size=options["batch_size"],
            dry_run=options["dry_run"],
            include_traces=options["include_traces"],
            progress=progress,
        )
        verb = "would delete" if result.dry_run else "deleted"
        self.stdout.write(
            f"Cutoff {result.cutoff.isoformat(timespec='seconds')}: {verb} {result.model_calls} model calls "
            f"and {result.requests} requests."
        )

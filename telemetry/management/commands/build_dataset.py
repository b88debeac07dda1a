"""``manage.py build_dataset``: the next dataset version from trustworthy traces (telemetry/datasets.py)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from telemetry.datasets import DEFAULT_REPLAY_SHARE, SOURCES, DatasetOptions, build_dataset
from telemetry.models import TaskCluster


class Command(BaseCommand):
    help = (
        "Build the next dataset version: train and replay JSONL (and DPO negatives), "
        "deduplicated and redacted."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--cluster", action="append", default=[], help="a TaskCluster key (repeatable); default: all"
        )
        parser.add_argument("--source", action="append", choices=SOURCES, help="repeatable; default: all")
        parser.add_argument(
            "--no-redact", action="store_true", help="keep PII as it is (redacted by default)"
        )
        parser.add_argument("--replay-share", type=float, default=DEFAULT_REPLAY_SHARE)

    def handle(self, *args: Any, **options: Any) -> None:
        if not 0 <= options["replay_share"] < 1:
            raise CommandError("--replay-share must be at least 0 and below 1")
        unknown = set(options["cluster"]) - set(TaskCluster.objects.values_list("key", flat=True))
        if unknown:
            raise CommandError(
                f"no such cluster: {', '.join(sorted(unknown))} (manage.py build_clusters lists them)"
            )
        dataset = build_dataset(
            DatasetOptions(
                clusters=options["cluster"],
                sources=tuple(options["source"] or SOURCES),
                redact=not options["no_redact"],
                replay_share=options["replay_share"],
            )
        )
        self.stdout.write(
            f"dataset v{dataset.version}: {dataset.train_rows} train, {dataset.replay_rows} replay, "
            f"{dataset.negative_rows} negatives in {dataset.path} (sha256 {dataset.sha256[:12]})"
        )

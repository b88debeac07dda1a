"""``manage.py learning_cycle [--force]``: one turn of the learning loop, now."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from reviewq.services import learning
from router.training import TrainingUnavailable


class Command(BaseCommand):
    help = (
        "When enough new trustworthy traces arrived (LEARNING_CYCLE_MIN_NEW_TRACES), build a dataset, "
        "train and replay an adapter for each base, and promote it where ops allow automatic "
        "promotion (LEARNING_CYCLE_AUTO_PROMOTE_TASKS) on a clear win. What the scheduler runs "
        "hourly when LEARNING_CYCLE_ENABLED is on."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--force", action="store_true", help="train even without enough new traces")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            steps = learning.learning_cycle(force=options["force"], actor="manage.py learning_cycle")
        except TrainingUnavailable as exc:
            raise CommandError(str(exc)) from None
        if not steps:
            self.stdout.write("no small llama.cpp model serves tool use: nothing to train")
        for step in steps:
            outcome = "promoted" if step.promoted else "not promoted"
            adapter = f"{step.adapter} {outcome}" if step.adapter else "no adapter trained"
            self.stdout.write(f"{step.base}: {adapter} ({step.reason})")

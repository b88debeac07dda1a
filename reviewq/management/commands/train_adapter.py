"""``manage.py train_adapter --base MODEL --cluster KEY|--all``: a LoRA adapter from traces."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from reviewq.errors import ApplicationError
from reviewq.services import learning
from router.training import TrainingConfig, TrainingUnavailable
from telemetry.datasets import DatasetOptions, build_dataset
from telemetry.models import Dataset


class Command(BaseCommand):
    help = (
        "Train a LoRA adapter for a small model from a dataset's train rows (a new dataset unless "
        "--dataset names one), then replay it on the held-out rows unless --no-replay."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--base", required=True, help="a llama.cpp ModelSpec name")
        scope = parser.add_mutually_exclusive_group(required=True)
        scope.add_argument("--cluster", help="a TaskCluster key (manage.py build_clusters lists them)")
        scope.add_argument("--all", action="store_true", help="every cluster's rows")
        parser.add_argument("--dataset", type=int, help="an existing dataset version")
        parser.add_argument("--steps", type=int, default=TrainingConfig.steps)
        parser.add_argument("--batch-size", type=int, default=TrainingConfig.batch_size)
        parser.add_argument("--learning-rate", type=float, default=TrainingConfig.learning_rate)
        parser.add_argument("--max-tokens", type=int, default=TrainingConfig.max_tokens)
        parser.add_argument("--no-replay", action="store_true")
        parser.add_argument("--replay-limit", type=int, help="replay at most this many held-out rows")

    def handle(self, *args: Any, **options: Any) -> None:
        cluster = options["cluster"] or ""
        if options["dataset"]:
            dataset = Dataset.objects.filter(version=options["dataset"]).first()
            if dataset is None:
                raise CommandError(f"no dataset v{options['dataset']}")
        else:
            dataset = build_dataset(DatasetOptions(clusters=[cluster] if cluster else []))
            self.stdout.write(
                f"dataset v{dataset.version}: {dataset.train_rows} train, {dataset.replay_rows} replay"
            )
        config = TrainingConfig(
            steps=options["steps"],
            batch_size=options["batch_size"],
            learning_rate=options["learning_rate"],
            max_tokens=options["max_tokens"],
        )
        disable = None if options["verbosity"] else True
        with tqdm(total=config.steps, unit="step", file=sys.stderr, disable=disable) as bar:

            def progress(step: int, loss: float) -> None:
                bar.set_postfix(loss=f"{loss:.4f}")
                bar.update(1)

            try:
                adapter = learning.train(
                    base=options["base"], dataset=dataset, cluster=cluster, config=config, progress=progress
                )
            except (ApplicationError, TrainingUnavailable) as exc:
                raise CommandError(str(exc)) from None
        self.stdout.write(
            f"adapter {adapter.name}: {adapter.rows_used} rows, {config.steps} steps in "
            f"{adapter.train_seconds:.0f} s, loss {adapter.losses[0]:.4f} → {adapter.losses[-1]:.4f}, "
            f"{adapter.size_bytes / 2**20:.1f} MiB at {adapter.path}"
        )
        if options["no_replay"]:
            return
        try:
            report = learning.replay(adapter, limit=options["replay_limit"])
        except ApplicationError as exc:
            self.stdout.write(f"not replayed: {exc.message}")
            return
        base, candidate = report["base"], report["candidate"]
        self.stdout.write(
            f"replay on {report['rows']} held-out rows: exact {base['exact']:.0%} (base) → "
            f"{candidate['exact']:.0%}; "
            f"valid {base['valid']:.0%} → {candidate['valid']:.0%}; worse clusters: "
            f"{learning.worse_clusters(report) or 'none'}"
        )

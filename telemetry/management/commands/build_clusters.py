"""``manage.py build_clusters``: the traffic grouped into task clusters (telemetry/clusters.py)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from telemetry.clusters import build_clusters


class Command(BaseCommand):
    help = "Group finished requests and upstream LLM calls into task clusters, with their figures."

    def handle(self, *args: Any, **options: Any) -> None:
        clusters = build_clusters()
        traces = sum(cluster.traces for cluster in clusters)
        candidates = [cluster for cluster in clusters if cluster.candidate]
        self.stdout.write(f"{len(clusters)} clusters of {traces} traces; {len(candidates)} candidates")
        for cluster in sorted(clusters, key=lambda c: -c.traces)[:20]:
            accuracy = (
                "–" if cluster.first_proposal_accuracy is None else f"{cluster.first_proposal_accuracy:.0%}"
            )
            mark = "*" if cluster.candidate else " "
            self.stdout.write(
                f" {mark} {cluster.traces:6d} {cluster.share:6.1%}  {cluster.final:32s} "
                f"first right {accuracy:>4s}  {cluster.label[:50]!r}"
            )

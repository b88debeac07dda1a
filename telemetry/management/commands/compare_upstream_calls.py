"""``manage.py compare_upstream_calls``: the small model proposes on upstream calls not yet
compared (imported ones, or observed ones whose hand-over was lost) and its agreement is recorded."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from tqdm import tqdm

from reviewq.services.observe import compare_upstream_call
from telemetry.models import UpstreamCall


class Command(BaseCommand):
    help = "Have the small model propose on upstream LLM calls not compared yet, and record its agreement."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--limit", type=int, default=0, help="at most this many calls (0: all)")

    def handle(self, *args: Any, **options: Any) -> None:
        pending = UpstreamCall.objects.filter(agreement="", answer__isnull=False).order_by("id")
        ids = list(pending.values_list("id", flat=True)[: options["limit"] or None])
        outcomes: Counter[str] = Counter()
        for call_id in tqdm(
            ids, unit="call", file=sys.stderr, disable=None if options["verbosity"] else True
        ):
            outcomes[compare_upstream_call(call_id) or "already compared"] += 1
        self.stdout.write(
            f"{len(ids)} calls compared: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        )

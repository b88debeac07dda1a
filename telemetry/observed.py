"""What a team sees after a week of observe mode: its upstream LLM's calls per tool and task
type, their cost, how often the small model agrees, and what moving that share would save."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import Count, Q, Sum
from django.utils import timezone

from router.contracts import Agreement
from telemetry.models import UpstreamCall
from telemetry.selectors import Window


@dataclass(frozen=True)
class ToolRow:
    """One tool (or replies, ``tool`` empty) of one task type."""

    tool: str
    task_type: str
    calls: int
    cost_usd: Decimal
    would_hold: int
    compared: int
    agreeing: int
    slm_cost_usd: Decimal

    @property
    def label(self) -> str:
        return self.tool or "(reply)"

    @property
    def agreement_rate(self) -> float | None:
        return self.agreeing / self.compared if self.compared else None

    @property
    def projected_saving_usd(self) -> Decimal:
        """The upstream cost of the agreeing share of all this row's calls, less what the small
        model costs to answer that share (at its measured cost per compared call)."""
        if not self.compared:
            return Decimal(0)
        share = Decimal(self.agreeing) / Decimal(self.compared)
        slm_per_call = self.slm_cost_usd / Decimal(self.compared)
        return max(Decimal(0), share * (self.cost_usd - slm_per_call * self.calls))


@dataclass(frozen=True)
class Observed:
    window: Window
    start: datetime
    rows: list[ToolRow]
    failed: int

    @property
    def calls(self) -> int:
        return sum(row.calls for row in self.rows)

    @property
    def cost_usd(self) -> Decimal:
        return sum((row.cost_usd for row in self.rows), Decimal(0))

    @property
    def projected_saving_usd(self) -> Decimal:
        return sum((row.projected_saving_usd for row in self.rows), Decimal(0))

    @property
    def agreement_rate(self) -> float | None:
        compared = sum(row.compared for row in self.rows)
        return sum(row.agreeing for row in self.rows) / compared if compared else None


def observed_get(*, window: Window, now: datetime | None = None) -> Observed:
    """Upstream calls created in ``window`` (observed and imported), grouped by tool and task type."""
    start = (now or timezone.now()) - window.span
    calls = UpstreamCall.objects.filter(created_at__gte=start)
    grouped = (
        calls.filter(answer__isnull=False)
        .values("tool_name", "task_type")
        .annotate(
            calls=Count("id"),
            cost=Sum("cost_usd"),
            would_hold=Count("id", filter=Q(would_hold=True)),
            compared=Count("id", filter=~Q(agreement="")),
            agreeing=Count("id", filter=Q(agreement=Agreement.AGREES)),
            slm_cost=Sum("slm_cost_usd"),
        )
        .order_by("-calls", "tool_name")
    )
    rows = [
        ToolRow(
            tool=row["tool_name"],
            task_type=row["task_type"],
            calls=row["calls"],
            cost_usd=row["cost"] or Decimal(0),
            would_hold=row["would_hold"],
            compared=row["compared"],
            agreeing=row["agreeing"],
            slm_cost_usd=row["slm_cost"] or Decimal(0),
        )
        for row in grouped
    ]
    return Observed(window=window, start=start, rows=rows, failed=calls.filter(answer__isnull=True).count())

"""Small server-side SVG charts: lines over time, stacked bars over time, horizontal bars.

Each chart is an inline ``<svg role="img">`` with a ``<title>`` and a ``<desc>`` that screen
readers announce, and a ``<title>`` on every bar and point, which browsers show on hover. No
JavaScript, no library, nothing fetched: the page works offline and under a strict CSP.

Every piece of text is escaped here; the result is marked safe for templates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import slugify

from telemetry.observed import Observed
from telemetry.selectors import OUTCOMES, Dashboard, Percentiles

# Colour-blind-safe (Okabe-Ito), then greys.
PALETTE = ["#0072B2", "#009E73", "#E69F00", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000", "#999999"]

# Drawn at about the size it is shown in a half-width card, so 12px text stays 12px.
WIDTH = 520
WIDE = 1120
FONT = 'font-family="system-ui, sans-serif" font-size="12"'
TITLE_FONT = 'font-family="system-ui, sans-serif" font-size="14" font-weight="600"'
TEXT_COLOUR = "#1d2330"
AXIS_COLOUR = "#6b7280"
GRID_COLOUR = "#e5e7eb"
TITLE_HEIGHT = 24.0
LEGEND_ROW = 18.0
CHAR_WIDTH = 7.0  # a generous width of a 12px system-ui character, for laying out labels
MAX_X_LABELS = 8

Formatter = Callable[[float], str]


@dataclass(frozen=True)
class Series:
    """One named line or bar series. ``None`` marks a missing value (a gap in a line)."""

    name: str
    values: Sequence[float | None]
    colour: str = ""


def number(value: float) -> str:
    """A compact number: 1234 → 1.2k, 0.5 → 0.5."""
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if abs(value) >= 1_000:
        return f"{value / 1_000:.1f}k"
    if value == int(value):
        return str(int(value))
    return f"{value:.2g}" if abs(value) < 1 else f"{value:.1f}"


def percent(value: float) -> str:
    return f"{value * 100:.0f}%"


def usd(value: float) -> str:
    if value == 0:
        return "$0"
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


def milliseconds(value: float) -> str:
    """A duration given in milliseconds, in the unit a person would use for it."""
    seconds = value / 1000
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    if seconds >= 1:
        return f"{seconds:.1f} s"
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def _nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times 10^n at or above ``value``, so gridlines land on round numbers."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _colours(series: Sequence[Series]) -> list[str]:
    return [s.colour or PALETTE[i % len(PALETTE)] for i, s in enumerate(series)]


def _open(title: str, description: str, width: int, height: float) -> list[str]:
    """The ``<svg>`` with its accessible name and description, and the title drawn at the top.

    Inside ``role="img"`` the drawn text is not read out separately, so the title is not
    announced twice.
    """
    chart_id = "chart-" + (slugify(title) or "untitled")
    return [
        f'<svg class="chart" id="{chart_id}" role="img" viewBox="0 0 {width} {height:.0f}" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>',
        f'<text x="0" y="16" fill="{TEXT_COLOUR}" {TITLE_FONT}>{escape(title)}</text>',
    ]


def _close(parts: list[str]) -> SafeString:
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every piece of text in ``parts`` was escaped


def _empty(title: str, description: str, width: int) -> SafeString:
    height = TITLE_HEIGHT + 60
    parts = _open(title, description or "No data in this window.", width, height)
    parts.append(
        f'<text x="{width / 2}" y="{TITLE_HEIGHT + 34}" text-anchor="middle" fill="{AXIS_COLOUR}" {FONT}>'
        "No data in this window.</text>"
    )
    return _close(parts)


def _legend_rows(series: Sequence[Series], left: float, width: float) -> list[list[tuple[int, float]]]:
    """Series indexes and x offsets, wrapped into rows that fit ``width``."""
    rows: list[list[tuple[int, float]]] = [[]]
    offset = 0.0
    for index, entry in enumerate(series):
        size = 28 + CHAR_WIDTH * len(entry.name)
        if rows[-1] and left + offset + size > width:
            rows.append([])
            offset = 0.0
        rows[-1].append((index, offset))
        offset += size
    return rows


def _legend(
    series: Sequence[Series],
    colours: Sequence[str],
    rows: list[list[tuple[int, float]]],
    left: float,
    top: float,
) -> list[str]:
    parts = []
    for row_number, row in enumerate(rows):
        y = top + LEGEND_ROW * row_number + 12
        for index, offset in row:
            parts.append(
                f'<rect x="{left + offset:.1f}" y="{y - 10}" width="11" height="11" fill="{colours[index]}"/>'
            )
            parts.append(
                f'<text x="{left + offset + 15:.1f}" y="{y}" fill="{TEXT_COLOUR}" {FONT}>'
                f"{escape(series[index].name)}</text>"
            )
    return parts


def _y_axis(
    top: float, left: float, plot_width: float, plot_height: float, ceiling: float, fmt: Formatter
) -> list[str]:
    parts = []
    for step in range(5):
        value = ceiling * step / 4
        y = top + plot_height - plot_height * step / 4
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_width}" y2="{y:.1f}" stroke="{GRID_COLOUR}"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{AXIS_COLOUR}" {FONT}>'
            f"{escape(fmt(value))}</text>"
        )
    return parts


def _x_labels(labels: Sequence[str], left: float, slot: float, baseline: float, width: float) -> list[str]:
    fits = max(2, int(width / (CHAR_WIDTH * max(len(label) for label in labels) + 16)))
    every = max(1, math.ceil(len(labels) / min(fits, MAX_X_LABELS)))
    return [
        f'<text x="{left + slot * (i + 0.5):.1f}" y="{baseline + 17}" text-anchor="middle" '
        f'fill="{AXIS_COLOUR}" {FONT}>{escape(label)}</text>'
        for i, label in enumerate(labels)
        if i % every == 0
    ]


def _time_frame(
    *,
    title: str,
    description: str,
    labels: Sequence[str],
    series: Sequence[Series],
    colours: Sequence[str],
    ceiling: float,
    y_format: Formatter,
    width: int,
    plot_height: float,
) -> tuple[list[str], float, float, float]:
    """Title, legend, gridlines and time labels of a chart over time; returns (parts, left, top, slot)."""
    widest_tick = max(len(y_format(ceiling * step / 4)) for step in range(5))
    left, right, bottom = 14 + CHAR_WIDTH * widest_tick, 8.0, 26.0
    rows = _legend_rows(series, left, width)
    top = TITLE_HEIGHT + LEGEND_ROW * len(rows) + 10
    plot_width = width - left - right
    slot = plot_width / len(labels)
    parts = _open(title, description, width, top + plot_height + bottom)
    parts += _legend(series, colours, rows, left, TITLE_HEIGHT)
    parts += _y_axis(top, left, plot_width, plot_height, ceiling, y_format)
    parts += _x_labels(labels, left, slot, top + plot_height, plot_width)
    return parts, left, top, slot


def line_chart(
    *,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    y_format: Formatter = number,
    y_max: float | None = None,
    description: str = "",
    width: int = WIDTH,
    plot_height: float = 170,
) -> SafeString:
    """Lines over ``labels`` (one value per label per series); ``None`` values leave a gap."""
    present = [v for s in series for v in s.values if v is not None]
    if not labels or not present:
        return _empty(title, description, width)
    ceiling = y_max if y_max is not None else _nice_ceiling(max(present))
    colours = _colours(series)
    parts, left, top, slot = _time_frame(
        title=title,
        description=description,
        labels=labels,
        series=series,
        colours=colours,
        ceiling=ceiling,
        y_format=y_format,
        width=width,
        plot_height=plot_height,
    )
    for entry, colour in zip(series, colours, strict=True):
        segments: list[list[tuple[float, float]]] = [[]]
        points = []
        for i, value in enumerate(entry.values):
            if value is None:
                segments.append([])
                continue
            x = left + slot * (i + 0.5)
            y = top + plot_height - plot_height * min(value, ceiling) / ceiling
            segments[-1].append((x, y))
            points.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>'
                f"{escape(labels[i])} · {escape(entry.name)}: {escape(y_format(value))}</title></circle>"
            )
        for segment in segments:
            if len(segment) > 1:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in segment)
                parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts += points
    return _close(parts)


def stacked_bar_chart(
    *,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    y_format: Formatter = number,
    description: str = "",
    width: int = WIDTH,
    plot_height: float = 190,
) -> SafeString:
    """One bar per label, its series stacked bottom to top in order. Empty series are left out."""
    shown = [s for s in series if any(v for v in s.values)]
    totals = [sum(s.values[i] or 0 for s in shown) for i in range(len(labels))]
    if not labels or not any(totals):
        return _empty(title, description, width)
    ceiling = _nice_ceiling(max(totals))
    colours = _colours(shown)
    parts, left, top, slot = _time_frame(
        title=title,
        description=description,
        labels=labels,
        series=shown,
        colours=colours,
        ceiling=ceiling,
        y_format=y_format,
        width=width,
        plot_height=plot_height,
    )
    bar = max(1.0, slot * 0.7)
    for i, label in enumerate(labels):
        y = top + plot_height
        for entry, colour in zip(shown, colours, strict=True):
            value = entry.values[i] or 0
            if not value:
                continue
            size = plot_height * value / ceiling
            y -= size
            parts.append(
                f'<rect x="{left + slot * i + (slot - bar) / 2:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                f'height="{size:.1f}" fill="{colour}"><title>{escape(label)} · {escape(entry.name)}: '
                f"{escape(y_format(value))}</title></rect>"
            )
    return _close(parts)


def bar_chart(
    *,
    title: str,
    categories: Sequence[str],
    series: Sequence[Series],
    value_format: Formatter = number,
    x_max: float | None = None,
    description: str = "",
    notes: Sequence[str] = (),
    width: int = WIDTH,
) -> SafeString:
    """Horizontal bars, one group per category, one bar per series; the value is printed beside it.

    ``notes`` (one per category) are printed after the last series' value, e.g. "12 of 40".
    """
    present = [v for s in series if s.values for v in s.values if v is not None]
    if not categories or not present:
        return _empty(title, description, width)
    ceiling = x_max if x_max is not None else _nice_ceiling(max(present))
    colours = _colours(series)
    left = min(200.0, 12 + CHAR_WIDTH * max(len(c) for c in categories))
    right = 12 + CHAR_WIDTH * max(
        len(value_format(ceiling)) + (len(note) + 3 if note else 0) for note in (list(notes) or [""])
    )
    rows = _legend_rows(series, left, width) if len(series) > 1 else []
    top = TITLE_HEIGHT + LEGEND_ROW * len(rows) + 6
    bar, gap = 16.0, 12.0
    group = bar * len(series) + gap
    plot_width = max(60.0, width - left - right)
    parts = _open(title, description, width, top + group * len(categories))
    parts += _legend(series, colours, rows, left, TITLE_HEIGHT)
    for i, category in enumerate(categories):
        y0 = top + group * i
        parts.append(
            f'<text x="{left - 8}" y="{y0 + bar * len(series) / 2 + 4:.1f}" text-anchor="end" '
            f'fill="{TEXT_COLOUR}" {FONT}>{escape(category)}</text>'
        )
        for j, (entry, colour) in enumerate(zip(series, colours, strict=True)):
            value = entry.values[i]
            y = y0 + bar * j
            size = 0.0 if not value else max(1.0, plot_width * min(value, ceiling) / ceiling)
            shown = "–" if value is None else value_format(value)
            note = f" ({notes[i]})" if notes and notes[i] and j == len(series) - 1 else ""
            parts.append(
                f'<rect x="{left}" y="{y:.1f}" width="{size:.1f}" height="{bar - 3}" fill="{colour}">'
                f"<title>{escape(category)} · {escape(entry.name)}: {escape(shown)}</title></rect>"
            )
            parts.append(
                f'<text x="{left + size + 5:.1f}" y="{y + bar - 5:.1f}" fill="{AXIS_COLOUR}" {FONT}>'
                f"{escape(shown + note)}</text>"
            )
    return _close(parts)


# --- The dashboard's charts ---


# Fixed per outcome, so a colour means the same thing in every window.
OUTCOME_COLOURS = {
    "auto_released": "#0072B2",
    "adjudicated": "#56B4E9",
    "approved": "#009E73",
    "edited": "#E69F00",
    "denied": "#D55E00",
    "blocked": "#CC79A7",
    "expired": "#F0E442",
    "failed": "#000000",
    "cancelled": "#8C564B",
    "pending": "#999999",
}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def percentile_chart(title: str, stats: dict[str, Percentiles], noun: str, *, description: str) -> SafeString:
    """Bars of p50 and p95 in milliseconds for each category, with how many ``noun``s each counts."""
    return bar_chart(
        title=title,
        categories=list(stats),
        series=[
            Series("p50", [value.p50 for value in stats.values()], PALETTE[0]),
            Series("p95", [value.p95 for value in stats.values()], PALETTE[5]),
        ],
        value_format=milliseconds,
        description=description,
        notes=[_count(value.count, noun) for value in stats.values()],
    )


def dashboard_charts(data: Dashboard) -> dict[str, SafeString]:
    """Every chart on the dashboard, keyed by its place on the page."""
    window = data.window
    labels = [timezone.localtime(start).strftime(window.label_format) for start in data.bucket_starts]
    span = f"the last {window.key}, {window.bucket_label}"
    spend = data.spend
    tiers = sorted(data.latency_by_tier)
    end_to_end = [("automated", "no human"), ("human", "held for a human"), ("all", "all finished")]
    decisions = [("all", "all decisions")] + [
        (key, key) for key in ("approve", "edit", "deny") if key in data.time_to_decision_by_decision
    ]
    decision_stats = {"all": data.time_to_decision, **data.time_to_decision_by_decision}
    return {
        "outcomes": stacked_bar_chart(
            title=f"Requests {window.bucket_label} by outcome",
            labels=labels,
            series=[
                Series(label, data.outcomes_per_bucket[key], OUTCOME_COLOURS[key]) for key, label in OUTCOMES
            ],
            width=WIDE,
            description=f"Requests received in {span}, stacked by how each one ended. "
            + ", ".join(f"{label}: {data.outcome_totals[key]}" for key, label in OUTCOMES),
        ),
        "escalation_rate": line_chart(
            title="Escalation rate over time",
            labels=labels,
            series=[Series("escalated", data.escalation_rate_per_bucket, PALETTE[4])],
            y_format=percent,
            y_max=1.0,
            description=f"Share of requests, {window.bucket_label}, that climbed past the small model.",
        ),
        "escalation_triggers": bar_chart(
            title="Escalations by trigger",
            categories=[trigger for trigger, _ in data.escalations_by_trigger],
            series=[Series("requests", [n for _, n in data.escalations_by_trigger], PALETTE[4])],
            description="Escalated requests, by what made each one climb first.",
            notes=[
                f"{n / data.requests_total:.0%} of requests" if data.requests_total else ""
                for _, n in data.escalations_by_trigger
            ],
        ),
        "spend": line_chart(
            title="Spend against the all-LLM baseline",
            labels=labels,
            series=[
                Series("spent", spend.actual_cumulative, PALETTE[1]),
                Series(f"all on {spend.baseline_model}", spend.baseline_cumulative, PALETTE[4]),
            ],
            y_format=usd,
            description=f"Cumulative USD over {span}: spent {usd(float(spend.actual_usd))}, "
            f"all-LLM baseline {usd(float(spend.baseline_usd))}.",
        ),
        "model_latency": percentile_chart(
            "Model call latency per tier",
            {tier.upper(): data.latency_by_tier[tier] for tier in tiers},
            "call",
            description="Median and 95th percentile latency of answered model calls, per tier.",
        ),
        "end_to_end_latency": percentile_chart(
            "End-to-end latency",
            {label: data.latency_end_to_end[key] for key, label in end_to_end},
            "request",
            description="From the agent's request to the final decision, with and without a human.",
        ),
        "validators": bar_chart(
            title="Validator failure rate",
            categories=[rate.validator for rate in data.validator_rates],
            series=[Series("failure rate", [rate.rate for rate in data.validator_rates], PALETTE[4])],
            value_format=percent,
            description=f"Share of the {data.validated_calls} validated model answers that each validator "
            "rejected.",
            notes=[f"{rate.failures} of {data.validated_calls}" for rate in data.validator_rates],
        ),
        "time_to_decision": percentile_chart(
            "Human time to decision",
            {label: decision_stats[key] for key, label in decisions},
            "decision",
            description="From the moment an action was held to the reviewer's decision.",
        ),
        "edit_share": bar_chart(
            title="Share of human decisions that were edits, per tool",
            categories=[share.tool for share in data.edit_share_by_tool],
            series=[Series("edits", [share.share for share in data.edit_share_by_tool], PALETTE[2])],
            value_format=percent,
            x_max=1.0,
            description="Where reviewers had to correct the model's proposal: "
            "the tools the models are weakest on.",
            notes=[f"{share.edits} of {share.decisions}" for share in data.edit_share_by_tool],
        ),
    }


def observed_charts(data: Observed) -> dict[str, SafeString]:
    """The observe-mode page's charts: the small model's agreement and the upstream cost per tool."""
    labels = [f"{row.label} · {row.task_type}" for row in data.rows]
    return {
        "agreement": bar_chart(
            title="Small model agrees with the upstream LLM",
            categories=labels,
            series=[Series("agreement", [row.agreement_rate for row in data.rows], PALETTE[1])],
            value_format=percent,
            x_max=1.0,
            description="Share of compared calls where the small model chose the same tool and arguments.",
            notes=[f"{row.agreeing} of {row.compared}" for row in data.rows],
        ),
        "cost": bar_chart(
            title="Upstream cost and projected saving",
            categories=labels,
            series=[
                Series("upstream cost", [float(row.cost_usd) for row in data.rows], PALETTE[0]),
                Series(
                    "projected saving", [float(row.projected_saving_usd) for row in data.rows], PALETTE[2]
                ),
            ],
            value_format=usd,
            description="What the upstream LLM cost per tool, and what moving the agreeing share would save.",
            notes=[_count(row.calls, "call") for row in data.rows],
        ),
    }

"""Datasets: the traces whose final action can be trusted, as versioned train and replay files.

Sources, each row the conversation followed by the action that should have come next:
- ``human``: a reviewer approved or edited the action (golden traces); a denial is a DPO negative
  (the proposal rejected, a declining reply chosen) in ``negatives.jsonl``;
- ``llm``: the LLM rung's answer passed the validators and the policies released it;
- ``upstream``: the team's own LLM answered (observed or imported), and no policy would hold it.
The small model's own auto-released answers are not a source: training on them teaches it nothing.

Rows are deduplicated by content, PII-redacted by default (telemetry/redaction.py, one
placeholder per value across the dataset) and split by time: a trace any earlier dataset held
out stays held out, so no adapter ever trains on a row it will be judged on, and the newest of
the other traces top the replay set up to ``replay_share`` of all rows (so new traffic mostly
trains: the train set grows from one dataset to the next). The same data and filters give the same rows
and hash.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max, QuerySet

from reviewq.models import DecisionBy, GoldenTrace, Request, RequestStatus
from router.contracts import Tier
from router.openai_actions import action_from_message
from telemetry.exports import SkipTrace, assistant_turn, dpo_record
from telemetry.models import ClusterMember, Dataset, ReplayTrace, UpstreamCall
from telemetry.redaction import Redactor

SOURCES = ("human", "llm", "upstream")
DEFAULT_REPLAY_SHARE = 0.2


@dataclass
class Row:
    trace: str  # request:<id> or upstream:<id>
    source: str
    created_at: Any
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    action: dict[str, Any]

    def content_key(self) -> str:
        canonical = json.dumps(
            [self.messages, self.tools, _calls_of(self.action)], sort_keys=True, default=str
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class DatasetOptions:
    clusters: list[str] = field(default_factory=list)  # TaskCluster keys; empty: every trace
    sources: tuple[str, ...] = SOURCES
    redact: bool = True
    replay_share: float = DEFAULT_REPLAY_SHARE

    def as_dict(self) -> dict[str, Any]:
        return {
            "clusters": sorted(self.clusters),
            "sources": list(self.sources),
            "redact": self.redact,
            "replay_share": self.replay_share,
        }


def _calls_of(action: dict[str, Any]) -> Any:
    """The action without its ids: two traces that did the same thing are one row."""
    if action.get("type") == "tool_calls":
        return [[call["name"], call.get("arguments")] for call in action["tool_calls"]]
    return {key: value for key, value in action.items() if key != "id"}


def _human_traces() -> QuerySet[GoldenTrace]:
    return (
        GoldenTrace.objects.trusted().exclude(decision=GoldenTrace.Decision.DENY).exclude(final_action=None)
    )


def _llm_requests() -> QuerySet[Request]:
    return Request.objects.filter(
        status=RequestStatus.RELEASED, decision__by=DecisionBy.POLICY, decision__tier=Tier.LLM
    ).exclude(action=None)


def _upstream_calls() -> QuerySet[UpstreamCall]:
    return UpstreamCall.objects.filter(answer__isnull=False, error="").exclude(would_hold=True)


def trustworthy_traces_since(moment: Any) -> int:
    """How many traces a dataset would take that arrived after ``moment`` (None: ever): what
    the learning cycle waits for before it trains again."""
    since = {} if moment is None else {"created_at__gt": moment}
    return sum(
        queryset.filter(**since).count() for queryset in (_human_traces(), _llm_requests(), _upstream_calls())
    )


def _human_rows() -> Iterator[Row]:
    traces = _human_traces()
    for trace in traces.order_by("created_at", "id").iterator(chunk_size=500):
        context = trace.context or {}
        assert trace.final_action is not None
        yield Row(
            f"request:{trace.request_id}",
            "human",
            trace.created_at,
            list(context.get("messages") or []),
            list(context.get("tools") or []),
            trace.final_action,
        )


def _llm_rows() -> Iterator[Row]:
    released = _llm_requests()
    for request in released.order_by("created_at", "id").iterator(chunk_size=500):
        assert request.action is not None
        yield Row(
            f"request:{request.id}",
            "llm",
            request.created_at,
            request.messages,
            request.tools,
            request.action,
        )


def _upstream_rows() -> Iterator[Row]:
    calls = _upstream_calls()
    for call in calls.order_by("created_at", "id").iterator(chunk_size=500):
        assert call.answer is not None
        yield Row(
            f"upstream:{call.id}",
            "upstream",
            call.created_at,
            call.messages,
            call.tools,
            action_from_message(call.answer),
        )


def _cluster_of() -> dict[str, str]:
    clusters: dict[str, str] = {}
    for request_id, upstream_id, key in ClusterMember.objects.values_list(
        "request_id", "upstream_call_id", "cluster__key"
    ).iterator():
        clusters[f"request:{request_id}" if request_id else f"upstream:{upstream_id}"] = key
    return clusters


def build_dataset(options: DatasetOptions) -> Dataset:
    """Builds, stores and returns the next dataset version (see the module docstring)."""
    clusters = _cluster_of()
    producers = {"human": _human_rows, "llm": _llm_rows, "upstream": _upstream_rows}
    rows: list[Row] = []
    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    # Human decisions first: where a trace is both a human's and the LLM's, the human's wins.
    for source in SOURCES:
        if source not in options.sources:
            continue
        for row in producers[source]():
            if options.clusters and clusters.get(row.trace) not in options.clusters:
                continue
            key = row.content_key()
            if key in seen:
                skipped["duplicate"] += 1
                continue
            seen.add(key)
            rows.append(row)
    traces_seen: set[str] = set()
    unique: list[Row] = []
    for row in rows:
        if row.trace in traces_seen:
            skipped["duplicate_trace"] += 1
            continue
        traces_seen.add(row.trace)
        unique.append(row)
    unique.sort(key=lambda row: (row.created_at, row.trace))

    held_out = set(
        ReplayTrace.objects.filter(trace__in=[row.trace for row in unique]).values_list("trace", flat=True)
    )
    # The replay set is topped up to its share with the newest rows not held out yet. Rows held
    # out before stay held out; the share is of all rows, not a fresh cut of the newest, so the
    # rows that arrived since the last dataset mostly go to training and the train set grows.
    wanted = math.ceil(len(unique) * options.replay_share) if unique else 0
    candidates = [row for row in unique if row.trace not in held_out]
    top_up = max(0, wanted - len(held_out))
    newest_traces = {row.trace for row in candidates[len(candidates) - top_up :]} if top_up else set()
    replay = [row for row in unique if row.trace in held_out or row.trace in newest_traces]
    train = [row for row in unique if row.trace not in held_out and row.trace not in newest_traces]

    redactor = Redactor() if options.redact else None
    train_lines = [_sft_line(row, clusters, redactor) for row in train]
    replay_lines = [_sft_line(row, clusters, redactor) for row in replay]
    negative_lines, negative_skips = _negative_lines(options, clusters, redactor)
    skipped.update(negative_skips)
    digest = hashlib.sha256()
    for line in [*train_lines, "\0", *replay_lines, "\0", *negative_lines]:
        digest.update(line.encode())

    with transaction.atomic():
        version = (Dataset.objects.select_for_update().aggregate(v=Max("version"))["v"] or 0) + 1
        folder = Path(settings.DATA_DIR) / "datasets" / f"v{version}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, lines in (("train", train_lines), ("replay", replay_lines), ("negatives", negative_lines)):
            (folder / f"{name}.jsonl").write_text("".join(line + "\n" for line in lines))
        dataset = Dataset.objects.create(
            version=version,
            filters=options.as_dict(),
            sha256=digest.hexdigest(),
            train_rows=len(train_lines),
            replay_rows=len(replay_lines),
            negative_rows=len(negative_lines),
            counts={
                "train": _counts(train, clusters),
                "replay": _counts(replay, clusters),
                "skipped": dict(skipped),
                "placeholders": dict(redactor.counts) if redactor else {},
            },
            path=str(folder),
        )
        ReplayTrace.objects.bulk_create(
            [ReplayTrace(trace=row.trace, dataset=dataset) for row in replay if row.trace not in held_out],
            ignore_conflicts=True,
        )
    return dataset


def _counts(rows: list[Row], clusters: dict[str, str]) -> dict[str, dict[str, int]]:
    return {
        "by_source": dict(Counter(row.source for row in rows)),
        "by_cluster": dict(Counter(clusters.get(row.trace, "") for row in rows)),
    }


def _sft_line(row: Row, clusters: dict[str, str], redactor: Redactor | None) -> str:
    messages, action = row.messages, row.action
    if redactor is not None:
        redacted = redactor.value({"messages": messages, "action": action})
        messages, action = redacted["messages"], redacted["action"]
    record = {
        "messages": [*messages, assistant_turn(action)],
        "tools": row.tools,
        "meta": {"trace": row.trace, "source": row.source, "cluster": clusters.get(row.trace, "")},
    }
    return json.dumps(record, ensure_ascii=False, sort_keys=True)


def _negative_lines(
    options: DatasetOptions, clusters: dict[str, str], redactor: Redactor | None
) -> tuple[list[str], Counter[str]]:
    """Denied proposals as DPO pairs (telemetry/exports.py's ``dpo_record``)."""
    lines: list[str] = []
    skipped: Counter[str] = Counter()
    if "human" not in options.sources:
        return lines, skipped
    denied = (
        GoldenTrace.objects.trusted().filter(decision=GoldenTrace.Decision.DENY).order_by("created_at", "id")
    )
    for row in denied.values("request_id", "decision", "reason", "context", "proposal", "final_action"):
        trace = f"request:{row['request_id']}"
        if options.clusters and clusters.get(trace) not in options.clusters:
            continue
        try:
            record = dpo_record(dict(row), redactor)
        except SkipTrace as skip:
            skipped[skip.reason] += 1
            continue
        record["meta"] = {"trace": trace, "source": "human", "cluster": clusters.get(trace, "")}
        lines.append(json.dumps(record, ensure_ascii=False, sort_keys=True))
    return lines, skipped

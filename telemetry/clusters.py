"""Task clusters: the traffic grouped into the tasks it keeps asking for.

A trace is a finished request (released or denied) or an upstream LLM call (observed or imported).
Traces are grouped by the tool set they offered and the tool their final action called (or the
task type, for replies, extractions and labels), and within that by how alike their request
texts are: TF-IDF over character n-grams (scikit-learn), then agglomerative clustering on cosine
distance. Why that and not an embedding model: agent requests of one task share their wording and
identifiers' shapes far more than their meaning, character n-grams see exactly that, and it runs
in milliseconds per thousand traces on a CPU already busy serving the small models, with no model
to load. Each cluster gets the figures that say whether a specialist adapter would pay.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Subquery, Sum
from django.utils import timezone
from sklearn.cluster import AgglomerativeClustering
from sklearn.feature_extraction.text import TfidfVectorizer

from reviewq.models import RISKY_TAGS, DecisionBy, GoldenTrace, Request, RequestStatus, ToolSpec
from router.contracts import Agreement, TaskType, Tier
from router.messages import content_text
from router.models import Adapter
from router.openai_actions import action_from_message, action_of_answer, compare_answers, first_tool_name
from router.prompts import task_type_of
from router.schemas import tool_function
from telemetry.models import ClusterMember, ModelCall, TaskCluster, UpstreamCall

# Cosine distance under which two request texts are one task (average linkage).
DISTANCE_THRESHOLD = 0.8
# Agglomerative clustering holds a distance matrix: larger groups are clustered on a sample
# (the earliest traces, so rebuilding the same data gives the same clusters) and the rest
# assigned to the nearest cluster.
MAX_CLUSTERED = 1500
MAX_TEXT = 2000


@dataclass
class Trace:
    """What clustering and the cluster figures need of one request or upstream call."""

    request_id: Any
    upstream_call_id: int | None
    created_at: Any
    tools: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    final_action: dict[str, Any] | None  # what was released (a denial: None)
    decided_action: dict[str, Any] | None  # the action the final decision was about
    task_type: str
    first_correct: bool | None  # the small model's first proposal against the final action
    escalated: bool | None
    human_decision: str
    cost_usd: Decimal
    # What made the first small-model proposal: the model, or the adapter over it (its generation).
    generation: str = ""
    auto_released: bool = False

    @property
    def tool_set(self) -> list[str]:
        return sorted(tool_function(tool)["name"] for tool in self.tools)

    @property
    def final(self) -> str:
        return first_tool_name(self.decided_action) or (
            TaskType.RESPOND if self.task_type == TaskType.TOOL_USE else self.task_type
        )

    @property
    def text(self) -> str:
        """The request's text: its last user message."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return content_text(message.get("content"))[:MAX_TEXT]
        return ""


def request_traces(*, with_messages: bool = True) -> Iterable[Trace]:
    """Released and denied requests, with their model calls summed up in the same query.

    ``with_messages=False`` leaves the conversations (the bulk of each row) in the database, for
    figures that never read them."""
    calls = ModelCall.objects.filter(request=OuterRef("pk"))
    first_slm = calls.filter(tier=Tier.SLM, purpose=ModelCall.Purpose.PROPOSE).order_by("created_at", "id")
    human = GoldenTrace.objects.filter(request=OuterRef("pk")).order_by("-created_at")
    rows = (
        Request.objects.filter(status__in=[RequestStatus.RELEASED, RequestStatus.DENIED])
        .annotate(
            first_answer=Subquery(first_slm.values("parsed_output")[:1]),
            first_model=Subquery(first_slm.values("model_name")[:1]),
            was_escalated=Exists(calls.filter(escalated=True)),
            model_cost=Sum("model_calls__cost_usd"),
            human_decision=Subquery(human.values("decision")[:1]),
        )
        .order_by("created_at", "id")
    )
    if not with_messages:
        rows = rows.defer("messages")
    for request in rows.iterator(chunk_size=500):
        task_type, _ = task_type_of(
            hint=request.task_type,
            tools=request.tools,
            response_schema=request.response_schema,
            labels=request.labels,
        )
        final = request.action if request.status == RequestStatus.RELEASED else None
        first = action_of_answer(request.first_answer) if request.first_answer is not None else None
        reference = final or request.proposal
        yield Trace(
            request_id=request.id,
            upstream_call_id=None,
            created_at=request.created_at,
            tools=request.tools,
            messages=request.messages if with_messages else [],
            final_action=final,
            decided_action=reference,
            task_type=task_type,
            first_correct=(
                compare_answers(final, first) == Agreement.AGREES if final is not None and first else None
            ),
            escalated=request.was_escalated,
            human_decision=request.human_decision or "",
            cost_usd=request.model_cost or Decimal(0),
            generation=request.first_model or "",
            auto_released=final is not None and (request.decision or {}).get("by") == DecisionBy.POLICY,
        )


def upstream_traces() -> Iterable[Trace]:
    for call in (
        UpstreamCall.objects.filter(answer__isnull=False)
        .order_by("created_at", "id")
        .iterator(chunk_size=500)
    ):
        assert call.answer is not None
        action = action_from_message(call.answer)
        yield Trace(
            request_id=None,
            upstream_call_id=call.id,
            created_at=call.created_at,
            tools=call.tools,
            messages=call.messages,
            final_action=action,
            decided_action=action,
            task_type=call.task_type,
            first_correct=None if not call.agreement else call.agreement == Agreement.AGREES,
            escalated=None,
            human_decision="",
            cost_usd=call.cost_usd,
        )


def text_groups(texts: list[str]) -> list[int]:
    """A group number per text: alike texts share one (see the module docstring)."""
    if len(texts) < 2:
        return [0] * len(texts)
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=1)
    sample = texts[:MAX_CLUSTERED]
    try:
        matrix = vectorizer.fit_transform(sample)
    except ValueError:  # no n-grams at all (empty texts): one group
        return [0] * len(texts)
    if matrix.shape[0] < 2:
        return [0] * len(texts)
    labels = AgglomerativeClustering(
        n_clusters=None, metric="cosine", linkage="average", distance_threshold=DISTANCE_THRESHOLD
    ).fit_predict(matrix.toarray())
    groups = [int(label) for label in labels]
    if len(texts) > len(sample):
        centroids = np.vstack(
            [np.asarray(matrix[labels == label].mean(axis=0)) for label in range(labels.max() + 1)]
        )
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True) + 1e-12
        rest = vectorizer.transform(texts[len(sample) :])
        groups += [int(index) for index in np.asarray((rest @ centroids.T).argmax(axis=1)).ravel()]
    return groups


def _rate(values: list[bool | None]) -> float | None:
    known = [value for value in values if value is not None]
    return sum(known) / len(known) if known else None


def _risky_tools() -> set[str]:
    return {
        tool.name
        for tool in ToolSpec.objects.filter(enabled=True)
        if RISKY_TAGS.intersection(tool.risk_tags or [])
    }


def build_clusters() -> list[TaskCluster]:
    """Rebuilds every cluster from the traces there are now, in one transaction."""
    traces = [*request_traces(), *upstream_traces()]
    by_task: dict[tuple[tuple[str, ...], str], list[Trace]] = defaultdict(list)
    for trace in traces:
        by_task[(tuple(trace.tool_set), trace.final)].append(trace)
    risky = _risky_tools()
    now = timezone.now()
    built: list[tuple[TaskCluster, list[Trace]]] = []
    for (tool_set, final), group in sorted(by_task.items()):
        numbers = text_groups([trace.text for trace in group])
        for number in sorted(set(numbers)):
            members = [trace for trace, n in zip(group, numbers, strict=True) if n == number]
            built.append((_cluster(tool_set, final, members, len(traces), final in risky, now), members))
    with transaction.atomic():
        TaskCluster.objects.all().delete()
        TaskCluster.objects.bulk_create([cluster for cluster, _ in built])
        ClusterMember.objects.bulk_create(
            [
                ClusterMember(
                    cluster=cluster, request_id=trace.request_id, upstream_call_id=trace.upstream_call_id
                )
                for cluster, members in built
                for trace in members
            ],
            batch_size=1000,
        )
    return [cluster for cluster, _ in built]


def _cluster(
    tool_set: tuple[str, ...], final: str, members: list[Trace], total: int, risky: bool, now: Any
) -> TaskCluster:
    label = min((trace.text for trace in members), key=len) if members else ""
    decisions = [trace.human_decision for trace in members if trace.human_decision]
    accuracy = _rate([trace.first_correct for trace in members])
    cluster = TaskCluster(
        key=hashlib.sha256(json.dumps([tool_set, final, label]).encode()).hexdigest(),
        tool_set=list(tool_set),
        final=final[:100],
        label=label[:200],
        traces=len(members),
        share=len(members) / total if total else 0,
        cost_usd=sum((trace.cost_usd for trace in members), Decimal(0)),
        first_proposal_accuracy=accuracy,
        escalation_rate=_rate([trace.escalated for trace in members]),
        human_edit_rate=(decisions.count(GoldenTrace.Decision.EDIT) / len(decisions)) if decisions else None,
        risky=risky,
        built_at=now,
    )
    cluster.candidate, cluster.candidate_reason = _candidate(cluster)
    return cluster


def _candidate(cluster: TaskCluster) -> tuple[bool, str]:
    """Whether a specialist adapter would pay here: enough traces, a small model often wrong, and
    a final tool that moves no money, PII or data (those stay with humans whatever the model)."""
    if cluster.risky:
        return False, "risky: its final tool moves money or personal data, or deletes"
    if cluster.traces < settings.CLUSTER_CANDIDATE_MIN_TRACES:
        return False, f"{cluster.traces} traces, fewer than {settings.CLUSTER_CANDIDATE_MIN_TRACES}"
    accuracy = cluster.first_proposal_accuracy
    if accuracy is not None and accuracy >= settings.CLUSTER_CANDIDATE_MAX_ACCURACY:
        return False, f"the small model is already right on {accuracy:.0%} of first proposals"
    seen = "not measured yet" if accuracy is None else f"{accuracy:.0%}"
    return True, f"{cluster.traces} traces, low risk, small model's first proposals right: {seen}"


@dataclass(frozen=True)
class Generation:
    """The traffic one adapter generation (or a base model without one) answered first."""

    name: str
    adapter: Any  # the Adapter row, or None for a base model
    requests: int
    escalation_rate: float | None
    auto_release_rate: float | None
    first_right_rate: float | None  # its first proposals against the final action
    human_decisions: int
    human_edit_rate: float | None
    first_seen: Any


def generations() -> list[Generation]:
    """Per adapter generation, in the order they started serving: how the escalation rate, the
    share released without a human and the first proposals' accuracy moved (the loop's proof)."""
    by_name: dict[str, list[Trace]] = defaultdict(list)
    for trace in request_traces(with_messages=False):
        if trace.generation:
            by_name[trace.generation].append(trace)
    adapters = {adapter.name: adapter for adapter in Adapter.objects.filter(name__in=list(by_name))}
    rows = []
    for name, traces in by_name.items():
        decided = [trace for trace in traces if trace.human_decision]
        rows.append(
            Generation(
                name=name,
                adapter=adapters.get(name),
                requests=len(traces),
                escalation_rate=_rate([trace.escalated for trace in traces]),
                auto_release_rate=_rate([trace.auto_released for trace in traces]),
                first_right_rate=_rate([trace.first_correct for trace in traces]),
                human_decisions=len(decided),
                human_edit_rate=_rate(
                    [trace.human_decision == GoldenTrace.Decision.EDIT for trace in decided]
                ),
                first_seen=min(trace.created_at for trace in traces),
            )
        )
    return sorted(rows, key=lambda row: row.first_seen)

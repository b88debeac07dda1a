"""Task clusters: traces grouped by tool set, final tool and request text, with their figures."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reviewq.models import ReviewItem
from reviewq.services.decisions import review_approve, review_edit
from reviewq.services.intake import request_create
from telemetry.clusters import build_clusters, text_groups
from telemetry.models import ClusterMember, TaskCluster
from telemetry.services import upstream_call_record
from tests.factories import body, tools

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded", "inline_pipeline")]

TOOLS = ("get_order_details", "cancel_pending_order")


def submit(agent: Any, text: str) -> Any:
    request, _ = request_create(agent_key=agent[0], payload=body(text, *TOOLS))
    request.refresh_from_db()
    return request


def test_alike_texts_share_a_group_and_others_do_not() -> None:
    groups = text_groups(
        [
            "Get order details for order_id=#W2378156",
            "Get order details for order_id=#W4817420",
            "Get order details for order_id=#W9911223 please",
            "My new mailing address is 221B Baker Street, London, please update it",
        ]
    )
    assert groups[0] == groups[1] == groups[2] != groups[3]
    assert text_groups(["only one"]) == [0] and text_groups([]) == []


def test_clusters_carry_the_figures_that_decide_a_specialist(
    agent: Any, reviewer: Any, settings: Any
) -> None:
    settings.CLUSTER_CANDIDATE_MIN_TRACES = 3
    for order in ("#W2378156", "#W4817420", "#W9911223"):
        assert submit(agent, f"Get order details for order_id={order}").status == "released"
    held = [
        submit(agent, f'Please cancel pending order order_id={o} reason="no longer needed"')
        for o in ("#W1", "#W2")
    ]
    items = [ReviewItem.objects.get(request=request) for request in held]
    review_approve(item_id=items[0].id, reviewer=reviewer)
    review_edit(
        item_id=items[1].id,
        reviewer=reviewer,
        tool_calls=[{"name": "get_order_details", "arguments": {"order_id": "#W2"}}],
    )
    # An upstream call the small model has not been compared on yet.
    answer = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "get_order_details", "arguments": json.dumps({"order_id": "#W5555555"})},
            }
        ],
    }
    upstream_call_record(
        source="imported",
        agent_key=None,
        model=None,
        model_name="gpt-team",
        messages=[{"role": "user", "content": "Get order details for order_id=#W5555555"}],
        tools=tools(*TOOLS),
        answer=answer,
        content_sha256="x",
    )

    clusters = build_clusters()
    by_final: dict[str, list[TaskCluster]] = {}
    for cluster in clusters:
        by_final.setdefault(cluster.final, []).append(cluster)
    lookups, edited = sorted(by_final["get_order_details"], key=lambda c: -c.traces)
    # The three released lookups and the upstream call; the cancellation a reviewer edited into a
    # lookup is a lookup too, but its text is another task's.
    assert lookups.traces == 4 and lookups.label.startswith("Get order details")
    assert (edited.traces, edited.human_edit_rate) == (1, 1.0)
    assert lookups.first_proposal_accuracy == 1.0  # the fake model proposed each final lookup
    assert lookups.escalation_rate == 0.0
    assert not lookups.risky
    assert lookups.candidate is False and "already right on 100%" in lookups.candidate_reason
    [cancellations] = by_final["cancel_pending_order"]
    assert (cancellations.traces, cancellations.risky, cancellations.candidate) == (1, True, False)
    assert cancellations.human_edit_rate == 0.0
    assert sum(cluster.traces for cluster in clusters) == 6
    assert round(sum(cluster.share for cluster in clusters), 6) == 1.0
    assert ClusterMember.objects.count() == 6
    assert ClusterMember.objects.filter(upstream_call__isnull=False).count() == 1

    keys = set(TaskCluster.objects.values_list("key", flat=True))
    build_clusters()
    assert set(TaskCluster.objects.values_list("key", flat=True)) == keys  # stable on the same data


def test_a_low_risk_task_the_small_model_gets_wrong_is_a_candidate(settings: Any) -> None:
    settings.CLUSTER_CANDIDATE_MIN_TRACES = 3
    for order in ("#W2378156", "#W4817420", "#W9911223"):
        call = upstream_call_record(
            source="observed",
            agent_key=None,
            model=None,
            model_name="gpt-team",
            messages=[{"role": "user", "content": f"Get order details for order_id={order}"}],
            tools=tools(*TOOLS),
            answer={"role": "assistant", "content": f"Order {order} shipped yesterday."},
            content_sha256=order,
        )
        call.agreement = "other_tool"
        call.save()
    [cluster] = build_clusters()
    assert (cluster.final, cluster.traces, cluster.first_proposal_accuracy) == ("respond", 3, 0.0)
    assert cluster.candidate and "low risk" in cluster.candidate_reason

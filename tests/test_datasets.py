"""Datasets: trustworthy traces, deduplicated, redacted, split by time, replay rows never trained on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reviewq.models import AuditEvent, GoldenTrace, ReviewItem
from reviewq.services.decisions import (
    golden_traces_flag_bad,
    golden_traces_unflag,
    review_approve,
    review_deny,
)
from reviewq.services.intake import request_create
from telemetry.datasets import DatasetOptions, build_dataset
from telemetry.models import Dataset, ReplayTrace, UpstreamCall
from telemetry.services import upstream_call_record
from tests.factories import body, tools

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded", "inline_pipeline")]

TOOLS = ("get_order_details", "cancel_pending_order")


@pytest.fixture(autouse=True)
def data_dir(settings: Any, tmp_path: Path) -> Path:
    settings.DATA_DIR = tmp_path
    return tmp_path


def upstream(text: str, order: str, *, would_hold: bool = False) -> UpstreamCall:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_order_details", "arguments": json.dumps({"order_id": order})},
    }
    return upstream_call_record(
        source="observed",
        agent_key=None,
        model=None,
        model_name="gpt-team",
        messages=[{"role": "user", "content": text}],
        tools=tools(*TOOLS),
        answer={"role": "assistant", "content": None, "tool_calls": [call]},
        content_sha256=text,
        policy=("human" if would_hold else "auto", "", would_hold),
    )


def held(agent: Any, order: str) -> ReviewItem:
    request, _ = request_create(
        agent_key=agent[0],
        payload=body(f'Please cancel pending order order_id={order} reason="no longer needed"', *TOOLS),
    )
    return ReviewItem.objects.get(request=request)


def lines(dataset: Dataset, split: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (Path(dataset.path) / f"{split}.jsonl").read_text().splitlines()]


def test_a_dataset_holds_trustworthy_rows_once_redacted_and_split_by_time(agent: Any, reviewer: Any) -> None:
    review_approve(item_id=held(agent, "#W1000001").id, reviewer=reviewer)
    review_approve(item_id=held(agent, "#W1000002").id, reviewer=reviewer)
    review_deny(item_id=held(agent, "#W1000003").id, reviewer=reviewer, reason="the customer never asked")
    upstream("Get order details for order_id=#W2000001", "#W2000001")
    upstream("Get order details for order_id=#W2000001", "#W2000001")  # the same call twice: one row
    upstream("Get order details for order_id=#W2000002", "#W2000002", would_hold=True)  # not trusted
    upstream("I am jane.doe@example.com, get order_id=#W2000003", "#W2000003")

    dataset = build_dataset(DatasetOptions(replay_share=0.25))
    assert (dataset.version, dataset.train_rows, dataset.replay_rows, dataset.negative_rows) == (1, 3, 1, 1)
    assert dataset.counts["skipped"] == {"duplicate": 1}
    assert dataset.counts["train"]["by_source"] == {"human": 2, "upstream": 1}
    train, replay = lines(dataset, "train"), lines(dataset, "replay")
    # The newest trace is held out for replay, redacted like every row.
    [held_out] = replay
    assert "<EMAIL_1>" in held_out["messages"][0]["content"]
    assert "jane.doe" not in (Path(dataset.path) / "replay.jsonl").read_text()
    assert held_out["messages"][-1]["tool_calls"][0]["function"]["name"] == "get_order_details"
    assert {row["meta"]["source"] for row in train} == {"human", "upstream"}
    [negative] = lines(dataset, "negatives")
    assert negative["rejected"][0]["tool_calls"][0]["function"]["name"] == "cancel_pending_order"


def test_replay_rows_are_never_trained_on_by_a_later_dataset(agent: Any, reviewer: Any) -> None:
    for order in ("#W3000001", "#W3000002", "#W3000003", "#W3000004"):
        upstream(f"Get order details for order_id={order}", order)
    first = build_dataset(DatasetOptions(replay_share=0.5))
    first_replay = {row["meta"]["trace"] for row in lines(first, "replay")}
    assert len(first_replay) == 2
    assert set(ReplayTrace.objects.values_list("trace", flat=True)) == first_replay

    # A later dataset with a smaller replay share and new traffic: the held-out rows stay out.
    for order in ("#W3000005", "#W3000006"):
        upstream(f"Get order details for order_id={order}", order)
    second = build_dataset(DatasetOptions(replay_share=0.1))
    train = {row["meta"]["trace"] for row in lines(second, "train")}
    replay = {row["meta"]["trace"] for row in lines(second, "replay")}
    assert first_replay <= replay and not train & replay
    assert (second.version, second.train_rows + second.replay_rows) == (2, 6)

    # The same data and filters give the same rows and hash.
    third = build_dataset(DatasetOptions(replay_share=0.1))
    assert third.sha256 == second.sha256 and third.version == 3


def test_new_traffic_mostly_trains_so_the_train_set_grows(agent: Any) -> None:
    for order in range(3000001, 3000011):
        upstream(f"Get order details for order_id=#W{order}", f"#W{order}")
    first = build_dataset(DatasetOptions(replay_share=0.2))
    assert (first.train_rows, first.replay_rows) == (8, 2)
    for order in range(3000011, 3000016):
        upstream(f"Get order details for order_id=#W{order}", f"#W{order}")
    second = build_dataset(DatasetOptions(replay_share=0.2))
    # 15 rows, 3 of them held out: the 2 held out before and the newest one.
    assert (second.train_rows, second.replay_rows) == (12, 3)
    replay = {row["meta"]["trace"] for row in lines(second, "replay")}
    assert {row["meta"]["trace"] for row in lines(first, "replay")} <= replay


def test_a_dataset_can_keep_pii_when_asked_and_filter_sources(agent: Any, reviewer: Any) -> None:
    upstream("I am jane.doe@example.com, get order_id=#W2000003", "#W2000003")
    review_approve(item_id=held(agent, "#W1000001").id, reviewer=reviewer)
    dataset = build_dataset(DatasetOptions(redact=False, replay_share=0, sources=("upstream",)))
    [row] = lines(dataset, "train")
    assert "jane.doe@example.com" in row["messages"][0]["content"]
    assert dataset.negative_rows == 0 and dataset.counts["train"]["by_source"] == {"upstream": 1}


def test_a_decision_ops_flagged_as_bad_is_never_trained_on(
    agent: Any, reviewer: Any, admin_user: Any
) -> None:
    good = review_approve(item_id=held(agent, "#W1000001").id, reviewer=reviewer)
    bad = review_approve(item_id=held(agent, "#W1000002").id, reviewer=reviewer)
    denied = review_deny(item_id=held(agent, "#W1000003").id, reviewer=reviewer, reason="not asked")
    bad_traces = GoldenTrace.objects.filter(review_item__in=[bad, denied]).values_list("id", flat=True)
    assert golden_traces_flag_bad(trace_ids=list(bad_traces), actor=admin_user, reason="wrong order") == 2
    dataset = build_dataset(DatasetOptions(replay_share=0))
    assert (dataset.train_rows, dataset.negative_rows) == (1, 0)
    [row] = lines(dataset, "train")
    assert row["meta"]["trace"] == f"request:{good.request_id}"
    assert AuditEvent.objects.filter(kind="trace.flag_bad").count() == 2
    assert golden_traces_unflag(trace_ids=list(bad_traces), actor=admin_user) == 2
    assert build_dataset(DatasetOptions(replay_share=0)).train_rows == 2

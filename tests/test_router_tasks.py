"""Task types, plans, uncertainty and the ladder's lower rungs, on the deterministic fake model."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from django.test import Client

from reviewq.models import Request, RequestStatus, RiskPolicy, ToolSpec
from router.backends.fake import FakeBackend
from router.models import EscalationPolicy, ModelSpec
from telemetry.models import ModelCall
from tests.factories import body, post_request, read_body, tools

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("seeded", "one_small_rung", "inline_pipeline"),
]


def post(client: Client, key: str, payload: dict[str, Any]) -> Any:
    return post_request(client, key, payload)


EXTRACTION_SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}, "email": {"type": "string"}},
    "required": ["order_id", "email"],
}


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_extraction_returns_json_valid_against_the_schema(client: Client, agent: Any, fmt: str) -> None:
    payload = {
        "messages": [{"role": "user", "content": "order_id=#W2378156 email=yusuf@example.com please"}],
        "response_schema": EXTRACTION_SCHEMA,
        "format": fmt,
        "wait_ms": 2000,
    }
    answer = post(client, agent[1], payload).json()
    assert answer["status"] == "released", answer
    action = answer["action"]
    assert action["type"] == "json"
    assert action["data"] == {"order_id": "#W2378156", "email": "yusuf@example.com"}
    if fmt == "yaml":
        assert yaml.safe_load(action["yaml"]) == action["data"]
    else:
        assert "yaml" not in action
    assert Request.objects.get(id=answer["id"]).route["task_type"] == "extraction"


def test_an_invented_extraction_value_is_caught_by_grounding(client: Client, agent: Any) -> None:
    FakeBackend.scripted_outputs.extend(['{"order_id": "#W1111111", "email": "x@y.com"}'] * 2)
    payload = {
        "messages": [{"role": "user", "content": "order #W2378156"}],
        "response_schema": EXTRACTION_SCHEMA,
    }
    answer = post(client, agent[1], payload).json()
    request = Request.objects.get(id=answer["id"])
    assert request.status == RequestStatus.AWAITING_REVIEW
    assert "grounding" in request.review_item.hold_reason


def test_classification_returns_one_of_the_labels(client: Client, agent: Any) -> None:
    payload = {
        "messages": [{"role": "user", "content": "I want a refund for my broken lamp"}],
        "labels": ["refund", "shipping", "other"],
        "wait_ms": 2000,
    }
    answer = post(client, agent[1], payload).json()
    assert answer["action"]["type"] == "label"
    assert answer["action"]["label"] == "refund"
    assert 0 <= answer["action"]["score"] <= 1


def test_a_plan_of_several_calls_is_checked_call_by_call(client: Client, agent: Any) -> None:
    FakeBackend.scripted_outputs.append(
        json.dumps(
            {
                "calls": [
                    {"name": "get_order_details", "arguments": {"order_id": "#W2378156"}},
                    {
                        "name": "cancel_pending_order",
                        "arguments": {"order_id": "#W2378156", "reason": "no longer needed"},
                    },
                ]
            }
        )
    )
    payload = body(
        "Look up #W2378156 and cancel it, no longer needed",
        "get_order_details",
        "cancel_pending_order",
        parallel_tool_calls=True,
        wait_ms=500,
    )
    answer = post(client, agent[1], payload).json()
    # The read-only call alone would be released; the cancellation holds the whole plan.
    assert answer["status"] == "awaiting_review"
    proposal = Request.objects.get(id=answer["id"]).proposal
    assert proposal is not None
    assert [call["name"] for call in proposal["tool_calls"]] == ["get_order_details", "cancel_pending_order"]


def test_a_plan_with_one_bad_call_names_the_call(client: Client, agent: Any) -> None:
    bad_plan = {
        "calls": [
            {"name": "get_order_details", "arguments": {"order_id": "#W2378156"}},
            {"name": "get_order_details", "arguments": {}},
        ]
    }
    FakeBackend.scripted_outputs.extend([json.dumps(bad_plan)] * 2)
    payload = body("Look up #W2378156", "get_order_details", parallel_tool_calls=True)
    answer = post(client, agent[1], payload).json()
    call = ModelCall.objects.filter(request_id=answer["id"]).first()
    assert call is not None
    assert call.validation_errors[0]["path"] == "$.calls[1].arguments"


def test_business_rules_from_ops_are_enforced(client: Client, agent: Any) -> None:
    ToolSpec.objects.filter(name="get_order_details").update(
        rules=[{"condition": 'order_id.startswith("#W")', "message": "order ids start with #W"}]
    )
    FakeBackend.scripted_outputs.extend(
        ['{"name":"get_order_details","arguments":{"order_id":"2378156"}}'] * 2
    )
    answer = post(client, agent[1], read_body()).json()
    call = ModelCall.objects.filter(request_id=answer["id"]).first()
    assert call is not None
    assert call.validation_errors == [
        {"validator": "business_rule", "path": "$.arguments", "message": "order ids start with #W"}
    ]


def test_an_uncertain_answer_climbs_and_waits_for_a_human_without_an_llm(client: Client, agent: Any) -> None:
    EscalationPolicy.objects.create(task_type="tool_use", uncertainty_threshold=0.001)
    answer = post(client, agent[1], read_body()).json()
    request = Request.objects.get(id=answer["id"])
    assert request.status == RequestStatus.AWAITING_REVIEW
    assert "above the threshold 0.001" in request.review_item.hold_reason
    assert "no enabled llm model" in request.review_item.hold_reason
    call = ModelCall.objects.get(request=request)
    assert (call.trigger, call.escalated) == ("uncertainty", True)
    assert call.uncertainty is not None and call.uncertainty["score"] > 0.001


def test_a_switched_off_trigger_holds_with_its_reason(client: Client, agent: Any) -> None:
    EscalationPolicy.objects.create(task_type="tool_use", escalate_on_validation_failure=False)
    FakeBackend.scripted_outputs.extend(["nope", "nope"])
    answer = post(client, agent[1], read_body()).json()
    reason = Request.objects.get(id=answer["id"]).review_item.hold_reason
    assert "escalation on validation_failed is switched off for tool_use" in reason


def test_a_conversation_longer_than_every_context_is_held_with_the_reason(client: Client, agent: Any) -> None:
    ModelSpec.objects.update(context_size=512)
    payload = body("x " * 3000 + "order_id=#W2378156", "get_order_details")
    answer = post(client, agent[1], payload).json()
    request = Request.objects.get(id=answer["id"])
    assert request.status == RequestStatus.AWAITING_REVIEW
    assert "more than any slm model's context" in request.review_item.hold_reason


def test_out_of_scope_intent_climbs_instead_of_forcing_a_tool(client: Client, agent: Any) -> None:
    EscalationPolicy.objects.create(task_type="tool_use", classify_intent=True)
    FakeBackend.scripted_outputs.append('{"label": "out_of_scope"}')
    answer = post(client, agent[1], body("Write me a poem about the sea", "get_order_details")).json()
    request = Request.objects.get(id=answer["id"])
    assert request.status == RequestStatus.AWAITING_REVIEW
    assert "none of the agent's tools fits" in request.review_item.hold_reason
    [call] = ModelCall.objects.filter(request=request)
    assert (call.purpose, call.trigger) == ("route", "out_of_scope")


def test_in_scope_intent_goes_on_to_the_proposal(client: Client, agent: Any) -> None:
    EscalationPolicy.objects.create(task_type="tool_use", classify_intent=True)
    answer = post(client, agent[1], read_body(wait_ms=2000)).json()
    assert answer["status"] == "released"
    assert list(ModelCall.objects.filter(request_id=answer["id"]).values_list("purpose", flat=True)) == [
        "route",
        "propose",
    ]


def test_a_policy_that_requires_the_llm_escalates_an_slm_proposal(client: Client, agent: Any) -> None:
    RiskPolicy.objects.create(
        name="LLM for reads", priority=1, match_tags=["read"], decision="auto", requires_llm=True
    )
    answer = post(client, agent[1], read_body()).json()
    reason = Request.objects.get(id=answer["id"]).review_item.hold_reason
    assert "requires an LLM-tier proposal" in reason


def test_pii_in_a_proposal_is_recorded_for_policies_and_reviewers(client: Client, agent: Any) -> None:
    payload = body(
        "find_user_id_by_email email=yusuf.rossi@example.com", "find_user_id_by_email", wait_ms=2000
    )
    answer = post(client, agent[1], payload).json()
    assert answer["decision"]["pii_found"] == [{"kind": "email", "path": "$.tool_calls[0].arguments.email"}]


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        (
            {"response_schema": {"type": "object", "properties": {"a": {"type": "string", "pattern": "(a"}}}},
            400,
        ),
        ({"response_schema": {"$ref": "http://example.com/schema.json"}}, 400),
        ({"labels": []}, 422),
        ({"labels": ["a", "a"]}, 422),
        ({"task_type": "extraction"}, 422),
        ({"task_type": "classification"}, 422),
    ],
)
def test_unusable_task_input_is_refused_at_intake(client: Client, agent: Any, extra: dict, code: int) -> None:
    response = post(client, agent[1], {"messages": [{"role": "user", "content": "hi"}], **extra})
    assert response.status_code == code, response.content
    assert response.json()["message"]
    assert Request.objects.count() == 0


def test_tools_are_listed_in_a_stable_order_for_prefix_reuse() -> None:
    from router.prompts import TaskSpec, build_prompt

    retail = tools()
    first = build_prompt(TaskSpec("tool_use", [{"role": "user", "content": "a"}], retail))
    second = build_prompt(TaskSpec("tool_use", [{"role": "user", "content": "b"}], retail))
    assert first.system == second.system

"""The ladder's upper rung: the real Anthropic client against a fake Messages API on 127.0.0.1."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from reviewq.models import Request, RequestStatus
from router.backends.fake import FakeBackend
from router.models import EscalationPolicy, ModelSpec
from telemetry.models import ModelCall
from tests.factories import body, post_request, read_body
from tests.fake_anthropic import FakeAnthropic, error_answer, fake_anthropic_fixture, tool_use_answer  # noqa: F401

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("seeded", "one_small_rung", "inline_pipeline"),
]


@pytest.fixture
def llm(fake_anthropic: FakeAnthropic, settings: Any) -> FakeAnthropic:
    settings.ANTHROPIC_API_KEY = "sk-test-not-a-real-key"
    ModelSpec.objects.filter(tier="llm").update(enabled=True, base_url=fake_anthropic.base_url)
    EscalationPolicy.objects.create(task_type="tool_use", max_llm_attempts=2)
    return fake_anthropic


def post(client: Client, key: str, payload: dict[str, Any]) -> Any:
    return post_request(client, key, payload).json()


def test_a_failed_slm_answer_is_fixed_by_the_llm(client: Client, agent: Any, llm: FakeAnthropic) -> None:
    FakeBackend.scripted_outputs.extend(['{"name":"get_order_details","arguments":{"order_id":"#W404"}}'] * 2)
    llm.script(
        tool_use_answer("get_order_details", {"order_id": "#W2378156"}, input_tokens=900, output_tokens=40)
    )
    answer = post(client, agent[1], read_body(wait_ms=5000))
    assert answer["status"] == "released", answer
    assert answer["action"]["tool_calls"][0]["arguments"] == {"order_id": "#W2378156"}
    assert (answer["decision"]["tier"], answer["decision"]["escalation_trigger"]) == (
        "llm",
        "validation_failed",
    )

    calls = list(ModelCall.objects.filter(request_id=answer["id"]))
    assert [(c.tier, c.purpose) for c in calls] == [("slm", "propose"), ("slm", "retry"), ("llm", "escalate")]
    assert calls[1].escalated and calls[1].trigger == "validation_failed"
    llm_call = calls[2]
    assert (llm_call.tokens_in, llm_call.tokens_out) == (900, 40)
    assert float(llm_call.cost_usd) == pytest.approx(900 * 3 / 1e6 + 40 * 15 / 1e6)

    sent = llm.last_body
    assert sent["model"] == "claude-sonnet-4-6"
    assert sent["tool_choice"]["type"] == "any"
    assert {tool["name"] for tool in sent["tools"]} == {"get_order_details", "cancel_pending_order"}
    prompt_text = json.dumps(sent["messages"])
    # The LLM sees the conversation, the SLM's failed attempts and why they failed.
    assert "Get order details for order_id=#W2378156" in prompt_text
    assert "#W404" in prompt_text and "does not appear in the conversation" in prompt_text


def test_an_unsure_slm_answer_is_not_shown_to_the_llm(client: Client, agent: Any, llm: FakeAnthropic) -> None:
    # Valid but unsure: the LLM answers on its own, neither anchored on the guess nor paying for it.
    EscalationPolicy.objects.filter(task_type="tool_use").update(uncertainty_threshold=0.001)
    llm.script(tool_use_answer("get_order_details", {"order_id": "#W2378156"}))
    answer = post(client, agent[1], read_body(wait_ms=5000))
    assert (answer["status"], answer["decision"]["escalation_trigger"]) == ("released", "uncertainty")
    prompt_text = json.dumps(llm.last_body)
    assert "Earlier answers" not in prompt_text and "qwen2.5" not in prompt_text


def test_an_llm_answer_goes_through_the_same_validators(
    client: Client, agent: Any, llm: FakeAnthropic
) -> None:
    FakeBackend.scripted_outputs.extend(["garbage", "garbage"])
    llm.script(
        tool_use_answer("get_order_details", {"order_id": "#W999"}),
        tool_use_answer("get_order_details", {"order_id": "#W998"}),
    )
    answer = post(client, agent[1], read_body())
    request = Request.objects.get(id=answer["id"])
    assert request.status == RequestStatus.AWAITING_REVIEW
    assert "the LLM's proposal also failed validation after 2 attempts" in request.review_item.hold_reason
    assert len(llm.requests) == 2
    assert "#W999" in json.dumps(llm.requests[1].body["messages"])  # the second try saw the first one's error


def test_an_llm_outage_holds_the_request_with_the_reason(
    client: Client, agent: Any, llm: FakeAnthropic, settings: Any
) -> None:
    settings.LLM_MAX_RETRIES = 0
    FakeBackend.scripted_outputs.extend(["garbage", "garbage"])
    llm.script(error_answer(500), error_answer(500), error_answer(500), error_answer(500))
    answer = post(client, agent[1], read_body())
    request = Request.objects.get(id=answer["id"])
    assert request.status == RequestStatus.AWAITING_REVIEW
    assert "LLM claude-sonnet-4-6 failed" in request.review_item.hold_reason
    assert ModelCall.objects.filter(request=request, tier="llm").get().error


def test_a_context_too_long_for_the_slm_goes_straight_to_the_llm(
    client: Client, agent: Any, llm: FakeAnthropic
) -> None:
    ModelSpec.objects.filter(tier="slm").update(context_size=512)
    llm.script(tool_use_answer("get_order_details", {"order_id": "#W2378156"}))
    answer = post(
        client, agent[1], body("x " * 3000 + "order_id=#W2378156", "get_order_details", wait_ms=5000)
    )
    assert answer["status"] == "released"
    assert answer["decision"]["escalation_trigger"] == "context_too_long"
    assert list(ModelCall.objects.filter(request_id=answer["id"]).values_list("tier", flat=True)) == ["llm"]

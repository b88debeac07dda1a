from __future__ import annotations

import json
from typing import Any

import pytest

from reviewq.models import Request, RequestStatus, ReviewItem, RiskPolicy
from reviewq.services import intake
from router.backends.fake import FakeBackend
from telemetry.models import ModelCall
from tests.factories import risky_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded", "inline_pipeline")]


@pytest.fixture
def adjudicated() -> RiskPolicy:
    return RiskPolicy.objects.create(
        name="Cancellations by mistake: second opinion",
        priority=1,
        tool_pattern="cancel_pending_order",
        decision="adjudicate",
        on_adjudicator_approve="release",
        on_adjudicator_reject="deny",
    )


def verdict(value: str, reason: str = "because") -> str:
    return json.dumps({"verdict": value, "reason": reason})


def run(agent: Any, *outputs: str) -> Request:
    # The first scripted output is the proposal (the fake's own answer), then the verdict.
    FakeBackend.scripted_outputs.extend(outputs)
    request, _ = intake.request_create(agent_key=agent[0], payload=risky_body())
    request.refresh_from_db()
    return request


PROPOSAL = '{"name":"cancel_pending_order","arguments":{"order_id":"#W2378156","reason":"no longer needed"}}'


def test_an_approving_verdict_releases_when_the_policy_says_so(agent: Any, adjudicated: RiskPolicy) -> None:
    request = run(agent, PROPOSAL, verdict("approve", "the customer asked"))
    assert request.status == RequestStatus.RELEASED
    assert request.decision["decision"] == "adjudicated"
    assert request.decision["adjudication"]["verdict"] == "approve"
    assert request.decision["adjudication"]["model"] == "gemma-3-270m"
    call = ModelCall.objects.get(request=request, purpose="adjudicate")
    assert call.model_name == "gemma-3-270m" and (call.parsed_output or {})["verdict"] == "approve"


def test_a_rejecting_verdict_denies_when_the_policy_says_so(agent: Any, adjudicated: RiskPolicy) -> None:
    request = run(agent, PROPOSAL, verdict("reject", "only asked for status"))
    assert request.status == RequestStatus.DENIED


def test_unsure_always_goes_to_a_human_with_the_verdict_shown(agent: Any, adjudicated: RiskPolicy) -> None:
    request = run(agent, PROPOSAL, verdict("unsure", "no confirmation"))
    assert request.status == RequestStatus.AWAITING_REVIEW
    item = ReviewItem.objects.get(request=request)
    assert (item.adjudication or {})["verdict"] == "unsure"
    assert "said unsure: no confirmation" in item.hold_reason


def test_an_approving_verdict_can_still_be_held(agent: Any, adjudicated: RiskPolicy) -> None:
    RiskPolicy.objects.filter(id=adjudicated.id).update(on_adjudicator_approve="human")
    assert run(agent, PROPOSAL, verdict("approve")).status == RequestStatus.AWAITING_REVIEW


def test_a_garbled_verdict_is_unsure(agent: Any, adjudicated: RiskPolicy) -> None:
    request = run(agent, PROPOSAL, '{"verdict": "sure thing"}')
    assert request.status == RequestStatus.AWAITING_REVIEW
    assert (ReviewItem.objects.get(request=request).adjudication or {})["verdict"] == "unsure"


def test_the_adjudicator_sees_the_conversation_action_and_policy(agent: Any, adjudicated: RiskPolicy) -> None:
    request = run(agent, PROPOSAL, verdict("approve"))
    prompt = ModelCall.objects.get(request=request, purpose="adjudicate").prompt
    assert "Please cancel pending order" in prompt
    assert 'cancel_pending_order {"order_id": "#W2378156"' in prompt
    assert "Cancellations by mistake: second opinion" in prompt

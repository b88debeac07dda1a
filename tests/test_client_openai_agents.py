"""The Agents SDK adapter with a real Agent and Runner, its model a fake OpenAI-compatible server
on 127.0.0.1: reviewq's decision resolves the run's interruptions, and an edit reaches the tool."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from agents import Agent, OpenAIChatCompletionsModel, RunConfig, Runner
from openai import AsyncOpenAI
from reviewq_client import AsyncReviewqClient, ReviewqClient
from reviewq_client.openai_agents import ReviewqApprovals, chat_messages

from reviewq.models import Request, ToolSpec
from reviewq.services.decisions import review_deny, review_edit
from tests.fake_openai import FakeOpenAI, chat_answer, tool_call_answer
from tests.test_client_fixtures import in_background, pending_item

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded")]

ASK = "Please refund 80 EUR on invoice INV-1001, it was charged twice (duplicate)."
NO_TRACING = RunConfig(tracing_disabled=True)


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


def build(client: Any, upstream: FakeOpenAI) -> tuple[Agent[Any], ReviewqApprovals, list[dict[str, Any]]]:
    ran: list[dict[str, Any]] = []
    approvals = ReviewqApprovals(client, route_wait_s=5)

    @approvals.tool
    def lookup_invoice(invoice_id: str) -> str:
        """Look up an invoice's status and amount."""
        ran.append({"lookup": invoice_id})
        return f"{invoice_id}: paid, 120 EUR"

    @approvals.tool
    def refund_invoice(
        invoice_id: str, amount: float, reason: Literal["duplicate", "damaged", "other"]
    ) -> str:
        """Refund (part of) a paid invoice to the customer's card."""
        ran.append({"invoice_id": invoice_id, "amount": amount, "reason": reason})
        return f"refunded {amount:.2f} EUR on {invoice_id}"

    # Ops registered both tools as the SDK describes them: a read, and a payment.
    for tool, tags in ((lookup_invoice, ["read"]), (refund_invoice, ["payment"])):
        function = approvals.openai_tool(tool)["function"]
        ToolSpec.objects.create(
            name=function["name"],
            description=function["description"],
            parameters=function["parameters"],
            risk_tags=tags,
        )
    model = OpenAIChatCompletionsModel(
        model="gpt-team", openai_client=AsyncOpenAI(base_url=f"{upstream.base_url}/v1", api_key="sk-fake")
    )
    agent: Agent[Any] = Agent(
        name="support",
        instructions="Help with invoices.",
        model=model,
        tools=[lookup_invoice, refund_invoice],
    )
    return agent, approvals, ran


def test_a_held_call_is_resolved_by_the_reviewers_edit(
    live_server_url: str, agent: Any, reviewer: Any, upstream: FakeOpenAI
) -> None:
    upstream.script(
        tool_call_answer("refund_invoice", invoice_id="INV-1001", amount=80, reason="duplicate"),
        chat_answer("I refunded 25 EUR."),
    )
    seen: dict[str, Any] = {}
    interrupted = threading.Event()  # the reviewer decides once the run has stopped

    client = AsyncReviewqClient(live_server_url, agent[1])
    sdk_agent, approvals, ran = build(client, upstream)

    async def run() -> Any:
        async with client:
            first = await Runner.run(sdk_agent, ASK, run_config=NO_TRACING)
            seen["interruptions"] = [
                (item.tool_name, json.loads(item.arguments or "{}")) for item in first.interruptions
            ]
            seen["ran_before"] = list(ran)
            interrupted.set()
            state = await approvals.resolve(first, timeout_s=20)
            final = await Runner.run(sdk_agent, state, run_config=NO_TRACING)
            return final.final_output

    with in_background(lambda: asyncio.run(run())) as call:
        assert interrupted.wait(timeout=20)
        item = pending_item()
        arguments = (item.action_under_review or {})["tool_calls"][0]["arguments"]
        review_edit(
            item_id=item.id,
            reviewer=reviewer,
            tool_calls=[{"name": "refund_invoice", "arguments": {**arguments, "amount": 25}}],
        )
        final_output = call.result(timeout=30)
    assert seen["interruptions"] == [
        ("refund_invoice", {"invoice_id": "INV-1001", "amount": 80, "reason": "duplicate"})
    ]
    assert seen["ran_before"] == []
    # The SDK approved the model's call; the tool ran with the reviewer's arguments.
    assert ran == [{"invoice_id": "INV-1001", "amount": 25, "reason": "duplicate"}]
    assert final_output == "I refunded 25 EUR."
    tool_result = next(m for m in upstream.last_body["messages"] if m["role"] == "tool")
    assert tool_result["content"] == "refunded 25.00 EUR on INV-1001"
    request = Request.objects.get()
    assert request.messages == [{"role": "user", "content": ASK}]
    assert request.metadata["via"] == "reviewq_client.openai_agents"


def test_a_denial_rejects_the_call_with_the_reason(
    live_server_url: str, agent: Any, reviewer: Any, upstream: FakeOpenAI
) -> None:
    upstream.script(
        tool_call_answer("refund_invoice", invoice_id="INV-1001", amount=80, reason="duplicate"),
        chat_answer("Sorry, I cannot refund that."),
    )

    # The synchronous client works too: its calls run in a thread.
    sdk_agent, approvals, ran = build(ReviewqClient(live_server_url, agent[1]), upstream)

    interrupted = threading.Event()

    async def run() -> None:
        first = await Runner.run(sdk_agent, ASK, run_config=NO_TRACING)
        assert first.interruptions
        interrupted.set()
        state = await approvals.resolve(first, timeout_s=20)
        await Runner.run(sdk_agent, state, run_config=NO_TRACING)

    with in_background(lambda: asyncio.run(run())) as call:
        assert interrupted.wait(timeout=20)
        review_deny(item_id=pending_item().id, reviewer=reviewer, reason="not a duplicate charge")
        call.result(timeout=30)
    assert ran == []
    tool_result = next(m for m in upstream.last_body["messages"] if m["role"] == "tool")
    assert "not a duplicate charge" in tool_result["content"]


def test_a_released_read_needs_no_approval(live_server_url: str, agent: Any, upstream: FakeOpenAI) -> None:
    upstream.script(tool_call_answer("lookup_invoice", invoice_id="INV-1001"), chat_answer("It is paid."))

    client = AsyncReviewqClient(live_server_url, agent[1])
    sdk_agent, _, ran = build(client, upstream)

    async def run() -> Any:
        async with client:
            result = await Runner.run(
                sdk_agent, "What is the status of invoice INV-1001?", run_config=NO_TRACING
            )
            return result.interruptions, result.final_output

    with in_background(lambda: asyncio.run(run())) as call:
        interruptions, final_output = call.result(timeout=30)
    assert (interruptions, final_output, ran) == ([], "It is paid.", [{"lookup": "INV-1001"}])
    assert Request.objects.get().status == "released"


def test_input_items_become_chat_messages() -> None:
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "Refund INV-1001"}]},
        {
            "type": "function_call",
            "call_id": "c1",
            "name": "lookup_invoice",
            "arguments": '{"invoice_id": "INV-1001"}',
        },
        {"type": "function_call_output", "call_id": "c1", "output": "paid"},
        {"type": "reasoning", "summary": []},
    ]
    assert chat_messages(items) == [
        {"role": "user", "content": "Refund INV-1001"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "lookup_invoice", "arguments": '{"invoice_id": "INV-1001"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "paid"},
    ]
    assert chat_messages("Hi") == [{"role": "user", "content": "Hi"}]

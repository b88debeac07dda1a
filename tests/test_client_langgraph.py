"""The LangGraph adapter in a real StateGraph with a checkpointer: a held call interrupts the
graph, reviewq's decision resumes it, and the tool runs with the reviewer's arguments."""

from __future__ import annotations

import importlib
from typing import Any, Literal

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command
from pydantic import TypeAdapter
from reviewq_client.langgraph import EDIT_NOTICE, ReviewqToolNode

from reviewq.models import Request, ToolSpec
from reviewq.services.decisions import review_deny, review_edit
from tests.test_client_fixtures import client_for, pending_item

# LangChain's own HITL types, imported at run time: mypy crashes analysing langchain.agents.
HITLRequest = importlib.import_module("langchain.agents.middleware.human_in_the_loop").HITLRequest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded")]

ran: list[dict[str, Any]] = []


@tool
def lookup_invoice(invoice_id: str) -> str:
    """Look up an invoice's status and amount."""
    ran.append({"lookup": invoice_id})
    return f"{invoice_id}: paid, 120 EUR"


@tool
def refund_invoice(invoice_id: str, amount: float, reason: Literal["duplicate", "damaged", "other"]) -> str:
    """Refund (part of) a paid invoice to the customer's card."""
    ran.append({"invoice_id": invoice_id, "amount": amount, "reason": reason})
    return f"refunded {amount:.2f} EUR on {invoice_id}"


@pytest.fixture(autouse=True)
def _tools(seeded: None) -> None:
    ran.clear()
    # Ops registered the tools as LangChain describes them: the lookup is a read, the refund money.
    for lc_tool, tags in ((lookup_invoice, ["read"]), (refund_invoice, ["payment"])):
        function = convert_to_openai_tool(lc_tool)["function"]
        ToolSpec.objects.create(
            name=function["name"],
            description=function["description"],
            parameters=function["parameters"],
            risk_tags=tags,
        )


def graph_for(client: Any, call: dict[str, Any]) -> Any:
    """model -> tools -> model, where the "model" proposes ``call`` and then sums up the result."""

    def model(state: MessagesState) -> dict[str, Any]:
        last = state["messages"][-1]
        if isinstance(last, ToolMessage):
            return {"messages": [AIMessage(content=f"Done: {last.content}")]}
        return {"messages": [AIMessage(content="", tool_calls=[{**call, "id": "call_1"}])]}

    def route(state: MessagesState) -> str:
        last = state["messages"][-1]
        return "tools" if isinstance(last, AIMessage) and last.tool_calls else END

    builder = StateGraph(MessagesState)
    builder.add_node("model", model)
    builder.add_node("tools", ReviewqToolNode(client, [lookup_invoice, refund_invoice], resume_wait_s=1))
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", route, ["tools", END])
    builder.add_edge("tools", "model")
    return builder.compile(checkpointer=InMemorySaver())


REFUND: dict[str, Any] = {
    "name": "refund_invoice",
    "args": {"invoice_id": "INV-1001", "amount": 80, "reason": "duplicate"},
}
ASK = {"messages": [HumanMessage("Refund 80 EUR on INV-1001, I was charged twice (duplicate).")]}


def test_a_held_call_interrupts_and_resumes_with_the_edited_arguments(
    live_server_url: str, agent: Any, reviewer: Any
) -> None:
    with client_for(live_server_url, agent) as client:
        graph = graph_for(client, REFUND)
        config: Any = {"configurable": {"thread_id": "thread-1"}}
        paused = graph.invoke(ASK, config)
        [interruption] = paused["__interrupt__"]
        payload = interruption.value
        # What LangChain's HumanInTheLoopMiddleware raises, plus the reviewq request behind it.
        TypeAdapter(HITLRequest).validate_python(payload)
        assert payload["action_requests"] == [
            {**payload["action_requests"][0], "name": "refund_invoice", "args": REFUND["args"]}
        ]
        assert "Hold money" in payload["action_requests"][0]["description"]
        assert payload["review_configs"] == [
            {"action_name": "refund_invoice", "allowed_decisions": ["approve", "edit", "reject"]}
        ]
        request_id = payload["reviewq"]["request_id"]
        assert ran == []

        # Resumed before anyone decided: it interrupts again, on the same request.
        again = graph.invoke(Command(resume=request_id), config)
        assert again["__interrupt__"][0].value["reviewq"]["request_id"] == request_id

        review_edit(
            item_id=pending_item(request_id=request_id).id,
            reviewer=reviewer,
            tool_calls=[{"name": "refund_invoice", "arguments": {**REFUND["args"], "amount": 30}}],
        )
        done = graph.invoke(Command(resume=request_id), config)
    assert "__interrupt__" not in done
    assert ran == [{"invoice_id": "INV-1001", "amount": 30, "reason": "duplicate"}]
    answer = done["messages"][-2]
    assert isinstance(answer, ToolMessage)
    assert answer.tool_call_id == "call_1"  # the model's call is the one answered
    assert isinstance(answer.content, str)
    assert answer.content.startswith(EDIT_NOTICE)
    assert "refunded 30.00 EUR on INV-1001" in answer.content
    assert done["messages"][-1].content.startswith("Done:")
    # Every run of the node found the same request.
    assert Request.objects.count() == 1


def test_a_released_read_runs_without_interrupting(live_server_url: str, agent: Any) -> None:
    with client_for(live_server_url, agent) as client:
        graph = graph_for(client, {"name": "lookup_invoice", "args": {"invoice_id": "INV-1001"}})
        done = graph.invoke(
            {"messages": [HumanMessage("What is the status of INV-1001?")]},
            {"configurable": {"thread_id": "thread-2"}},
        )
    assert "__interrupt__" not in done
    assert ran == [{"lookup": "INV-1001"}]
    assert done["messages"][-2].content == "INV-1001: paid, 120 EUR"


def test_a_denial_answers_the_call_with_the_reason(live_server_url: str, agent: Any, reviewer: Any) -> None:
    with client_for(live_server_url, agent) as client:
        graph = graph_for(client, REFUND)
        config: Any = {"configurable": {"thread_id": "thread-3"}}
        request_id = graph.invoke(ASK, config)["__interrupt__"][0].value["reviewq"]["request_id"]
        review_deny(
            item_id=pending_item(request_id=request_id).id, reviewer=reviewer, reason="not a duplicate"
        )
        done = graph.invoke(Command(resume=True), config)
    rejected = done["messages"][-2]
    assert isinstance(rejected, ToolMessage)
    assert rejected.status == "error"
    assert "rejected" in rejected.content and "not a duplicate" in rejected.content
    assert ran == []

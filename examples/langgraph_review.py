"""LangGraph with reviewq deciding the tool calls: a held call interrupts the graph; reviewq's
decision resumes it.

    REVIEWQ_API_KEY=rq_... .venv/bin/python examples/langgraph_review.py

The "model" node is scripted so the example needs no LLM: it asks to cancel an order, then sums
up the tool's answer. Put your chat model there (``ChatOpenAI(...).bind_tools(TOOLS)``), and keep
``ReviewqToolNode`` where LangGraph's ``ToolNode`` would be.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command
from reviewq_client import ReviewqClient
from reviewq_client.langgraph import ReviewqToolNode


@tool
def cancel_pending_order(
    order_id: Annotated[str, "The order id, such as '#W0000000'."],
    reason: Literal["no longer needed", "ordered by mistake"],
) -> str:
    """Cancel a pending order and refund it."""
    return f"cancelled {order_id} ({reason})"


def model(state: MessagesState) -> dict[str, Any]:
    last = state["messages"][-1]
    if isinstance(last, ToolMessage):
        return {"messages": [AIMessage(content=f"Done: {last.content}")]}
    call = {
        "name": "cancel_pending_order",
        "args": {"order_id": "#W2378156", "reason": "no longer needed"},
        "id": "call_cancel_1",
    }
    return {"messages": [AIMessage(content="", tool_calls=[call])]}


def route(state: MessagesState) -> str:
    last = state["messages"][-1]
    return "tools" if isinstance(last, AIMessage) and last.tool_calls else END


def main() -> None:
    client = ReviewqClient.from_env()  # REVIEWQ_URL, REVIEWQ_API_KEY
    builder = StateGraph(MessagesState)
    builder.add_node("model", model)
    # Each resume waits up to 30 s for the reviewer before interrupting again.
    builder.add_node("tools", ReviewqToolNode(client, [cancel_pending_order], resume_wait_s=30))
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", route, ["tools", END])
    builder.add_edge("tools", "model")
    graph = builder.compile(checkpointer=InMemorySaver())

    config: Any = {"configurable": {"thread_id": "demo-thread"}}
    ask = "Cancel my order #W2378156, I no longer need it (no longer needed)."
    result = graph.invoke({"messages": [HumanMessage(ask)]}, config)
    while "__interrupt__" in result:
        held = result["__interrupt__"][0].value
        print(f"held ({held['reviewq']['reason']}); decide at http://127.0.0.1:8000/review/")
        # The resume value is not read: reviewq's decision is the source of truth.
        result = graph.invoke(Command(resume=held["reviewq"]["request_id"]), config)
    print(result["messages"][-1].content)


if __name__ == "__main__":
    main()

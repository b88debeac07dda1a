"""LangGraph: a tool node whose calls reviewq decides, pausing the graph while a reviewer looks.

``ReviewqToolNode(client, tools)`` takes the place of LangGraph's ``ToolNode``. It sends the last
AI message's tool calls to reviewq as the agent's ``proposed_action`` (with the conversation
before them and the tools' schemas). Released: it runs the released calls, with the reviewer's
edited arguments where they were edited. Denied, expired or withdrawn: each call is answered with
an error ``ToolMessage`` that gives the reason, and nothing runs. Held: the node calls
``langgraph.types.interrupt()`` with a payload in the vocabulary of LangChain's
``HumanInTheLoopMiddleware`` (``action_requests`` / ``review_configs``) plus a ``reviewq`` part
with the request id; the graph stops there, its state checkpointed.

Resume with ``graph.invoke(Command(resume=...), config)`` once the reviewer decided (the value is
not read: reviewq's decision is the source of truth, so nobody approves by resuming). The node
runs again from the start: the same submission under the same Idempotency-Key returns the same
request, and the node reads its outcome again; still undecided, it interrupts again.

Needs the ``langgraph`` extra (``pip install reviewq-client[langgraph]``) and a checkpointer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, ToolMessage, convert_to_openai_messages
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.config import get_config
from langgraph.types import interrupt

from reviewq_client.client import ReviewqClient
from reviewq_client.outcome import Outcome, ToolCall
from reviewq_client.tool_schema import propose_tool_calls

# LangChain's HumanInTheLoopMiddleware tells the model the same when a reviewer edited a call.
EDIT_NOTICE = (
    "Note: a human reviewer replaced this tool call before it ran. The call recorded in your message "
    "is the one you produced, not the one that executed. Do not re-issue your original call."
)
# What a reviewer can do with a held call in reviewq (a reply in place of the tool is not one).
ALLOWED_DECISIONS = ["approve", "edit", "reject"]


class ReviewqToolNode:
    """A graph node that runs the last AI message's tool calls once reviewq released them.

    ``route_wait_s``: how long the node waits for reviewq to release or hold a call (policies
    take milliseconds; a model proposing or adjudicating, longer). ``resume_wait_s``: how long a
    resumed node waits for the reviewer before interrupting again.
    """

    def __init__(
        self,
        client: ReviewqClient,
        tools: Sequence[BaseTool],
        *,
        messages_key: str = "messages",
        route_wait_s: float = 10.0,
        resume_wait_s: float = 5.0,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.tools = {tool.name: tool for tool in tools}
        self.messages_key = messages_key
        self.route_wait_s = route_wait_s
        self.resume_wait_s = resume_wait_s
        self.metadata = {"via": "reviewq_client.langgraph", **(metadata or {})}

    def __call__(self, state: Any) -> dict[str, Any]:
        messages: list[AnyMessage] = list(
            state[self.messages_key] if isinstance(state, dict) else getattr(state, self.messages_key)
        )
        last = messages[-1] if messages else None
        if not isinstance(last, AIMessage) or not last.tool_calls:
            return {}
        outcome = self.client.submit(
            convert_to_openai_messages(messages[:-1]),
            [convert_to_openai_tool(tool) for tool in self.tools.values()],
            proposed_action=propose_tool_calls(
                [(call["name"], call["args"]) for call in last.tool_calls],
                call_ids=[str(call["id"]) for call in last.tool_calls],
            ),
            parallel_tool_calls=len(last.tool_calls) > 1 or None,
            metadata=self.metadata,
            idempotency_key=_idempotency_key(last),
        )
        if not outcome.routed:
            outcome = self.client.wait_routed(outcome.id, timeout_s=self.route_wait_s)
        while outcome.pending:
            # Raises GraphInterrupt the first time; on a resume returns its value (not read).
            interrupt(hitl_request(last, outcome))
            outcome = self.client.wait(outcome.id, timeout_s=self.resume_wait_s)
        return {self.messages_key: self.tool_messages(last, outcome)}

    def tool_messages(self, proposed: AIMessage, outcome: Outcome) -> list[ToolMessage]:
        """The answers to ``proposed``'s tool calls under reviewq's final ``outcome``."""
        original = [str(call["id"]) for call in proposed.tool_calls]
        if not outcome.released:
            why = outcome.reason or "no reason given"
            verb = "rejected" if outcome.denied else f"did not release ({outcome.status})"
            return [
                ToolMessage(
                    content=f"A reviewer {verb} the tool call `{call['name']}`: {why}. The tool was not "
                    "executed. Do not retry this call unless the user asks for it.",
                    name=call["name"],
                    tool_call_id=str(call["id"]),
                    status="error",
                )
                for call in proposed.tool_calls
            ]
        released = outcome.tool_calls
        results = [self._run(call) for call in released]
        edited = outcome.edited
        # An edit gives the calls new ids: answer the model's calls in order, the last one with
        # whatever is left over if the reviewer changed their number.
        answers = []
        for index, call_id in enumerate(original):
            if index >= len(results):
                content = "A reviewer removed this tool call; it was not executed."
                answers.append(ToolMessage(content=content, tool_call_id=call_id, status="error"))
                continue
            parts = results[index:] if index == len(original) - 1 else [results[index]]
            content = "\n".join(text for text, _ in parts)
            if edited:
                content = f"{EDIT_NOTICE}\n\n{content}"
            status = "error" if any(failed for _, failed in parts) else "success"
            answers.append(
                ToolMessage(content=content, name=released[index].name, tool_call_id=call_id, status=status)
            )
        return answers

    def _run(self, call: ToolCall) -> tuple[str, bool]:
        tool = self.tools.get(call.name)
        if tool is None:
            return f"reviewq released a call of {call.name}, which this node does not have", True
        try:
            result = tool.invoke(call.arguments)
        except Exception as exc:  # noqa: BLE001  # the model hears of a failing tool, as ToolNode does
            return f"Error: {exc!r}", True
        return (result if isinstance(result, str) else json.dumps(result, default=str)), False


def hitl_request(proposed: AIMessage, outcome: Outcome) -> dict[str, Any]:
    """The interrupt's value: LangChain's ``HITLRequest`` shape, and reviewq's request."""
    return {
        "action_requests": [
            {
                "name": call["name"],
                "args": call["args"],
                "description": f"Held for review in reviewq: {outcome.reason}"
                if outcome.reason
                else "Held for review in reviewq",
            }
            for call in proposed.tool_calls
        ],
        "review_configs": [
            {"action_name": name, "allowed_decisions": list(ALLOWED_DECISIONS)}
            for name in dict.fromkeys(call["name"] for call in proposed.tool_calls)
        ],
        "reviewq": {"request_id": outcome.id, "status": outcome.status, "reason": outcome.reason},
    }


def _idempotency_key(proposed: AIMessage) -> str:
    """The same for every run of the node on this message of this thread: a resumed node gets
    its first request back instead of submitting another one."""
    configurable = get_config().get("configurable") or {}
    identity = [
        str(configurable.get("thread_id", "")),
        str(proposed.id or ""),
        *(str(call["id"]) for call in proposed.tool_calls),
    ]
    return "langgraph:" + hashlib.sha256("\x1f".join(identity).encode()).hexdigest()[:40]

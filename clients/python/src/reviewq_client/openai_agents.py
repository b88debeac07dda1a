"""The OpenAI Agents SDK: tools whose ``needs_approval`` is reviewq's decision.

``approvals = ReviewqApprovals(client)`` and ``@approvals.tool`` in place of ``@function_tool``:

- When the model calls the tool, its ``needs_approval`` sends the call to reviewq as the agent's
  ``proposed_action`` (with the run's input as the conversation). Released by the policies at
  once: no approval is needed and the tool runs. Anything else: the run stops with an
  interruption, as for any tool that needs approval.
- ``state = await approvals.resolve(result)`` waits for reviewq's decisions on the run's
  interruptions and approves or rejects each in the ``RunState`` (a rejection carries the
  reviewer's reason to the model); ``await Runner.run(agent, state)`` goes on.
- When the tool runs, it runs with the arguments reviewq released: a reviewer's edit reaches the
  function, although the SDK's own approval has no edit.

The link from a call to its reviewq request is kept in this object, so resolve in the process
that ran the agent. Needs the ``openai-agents`` extra.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from agents import FunctionTool, RunContextWrapper, RunResult, RunState, ToolApprovalItem, function_tool
from agents.tool_context import ToolContext

from reviewq_client.client import AsyncReviewqClient, ReviewqClient
from reviewq_client.errors import InvalidProposedAction
from reviewq_client.outcome import Outcome
from reviewq_client.review_gate import default_messages
from reviewq_client.tool_schema import propose_tool_call


class ReviewqApprovals:
    """reviewq as the approver of a set of Agents SDK tools.

    ``route_wait_s``: how long ``needs_approval`` waits for reviewq to release or hold a call
    (policies take milliseconds).
    """

    def __init__(
        self,
        client: AsyncReviewqClient | ReviewqClient,
        *,
        route_wait_s: float = 10.0,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.route_wait_s = route_wait_s
        self.metadata = {"via": "reviewq_client.openai_agents", **(metadata or {})}
        self.tools: dict[str, FunctionTool] = {}
        # Per tool call id: reviewq's last word on it, or the validators' refusal.
        self._outcomes: dict[str, Outcome] = {}
        self._refused: dict[str, InvalidProposedAction] = {}

    def tool(
        self,
        func: Callable[..., Any] | None = None,
        *,
        name_override: str | None = None,
        description_override: str | None = None,
        **function_tool_kwargs: Any,
    ) -> Any:
        """``@approvals.tool`` (or ``@approvals.tool(name_override=...)``): a ``FunctionTool``
        gated by reviewq. Other keywords go to the SDK's ``function_tool``."""

        def build(func: Callable[..., Any]) -> FunctionTool:
            inner = function_tool(
                func,
                name_override=name_override,
                description_override=description_override,
                **function_tool_kwargs,
            )
            gated = FunctionTool(
                name=inner.name,
                description=inner.description,
                params_json_schema=inner.params_json_schema,
                on_invoke_tool=self._invoker(inner),
                strict_json_schema=False,  # the inner tool's schema, already made strict or not
                needs_approval=self._needs_approval(inner),
            )
            self.tools[gated.name] = gated
            return gated

        return build(func) if func is not None else build

    def openai_tool(self, tool: FunctionTool) -> dict[str, Any]:
        """``tool`` as an OpenAI function tool, as reviewq takes it."""
        return {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.params_json_schema,
            },
        }

    async def submit(
        self, tool: FunctionTool, arguments: dict[str, Any], call_id: str, turn_input: Any
    ) -> Outcome:
        """Sends one call of ``tool`` to reviewq; remembers the outcome under ``call_id``."""
        messages = chat_messages(turn_input) or default_messages(tool.name, tool.description, arguments)
        outcome = await _call(
            self.client.submit,
            messages,
            [self.openai_tool(candidate) for candidate in self.tools.values()],
            proposed_action=propose_tool_call(tool.name, arguments, call_id=call_id),
            metadata=self.metadata,
        )
        if not outcome.routed:
            outcome = await _call(self.client.wait_routed, outcome.id, self.route_wait_s)
        self._outcomes[call_id] = outcome
        return outcome

    def _needs_approval(self, tool: FunctionTool) -> Callable[..., Any]:
        async def needs_approval(
            context: RunContextWrapper[Any], arguments: dict[str, Any], call_id: str
        ) -> bool:
            try:
                outcome = await self.submit(tool, arguments, call_id, context.turn_input)
            except InvalidProposedAction as refused:
                self._refused[call_id] = refused
                return True  # resolve() rejects it with the validators' findings
            return not outcome.released

        return needs_approval

    def _invoker(self, inner: FunctionTool) -> Callable[[ToolContext[Any], str], Any]:
        async def invoke(context: ToolContext[Any], arguments: str) -> Any:
            outcome = self._outcomes.pop(context.tool_call_id, None)
            if outcome is not None and outcome.pending:
                outcome = await _call(self.client.get, outcome.id)
            if outcome is None or not outcome.released:
                status = outcome.status if outcome else "unknown to this process"
                return f"Not executed: reviewq has not released this call ({status})."
            released = [call for call in outcome.tool_calls if call.name == inner.name]
            if not released:
                return f"Not executed: reviewq released another action than {inner.name}."
            # The released arguments, which are the model's unless a reviewer edited them.
            return await inner.on_invoke_tool(context, json.dumps(released[0].arguments))

        return invoke

    async def resolve(
        self, run: RunResult | RunState[Any], *, timeout_s: float | None = 300.0
    ) -> RunState[Any]:
        """The run's state with each of this object's interruptions approved or rejected as
        reviewq decided. A call still undecided after ``timeout_s`` stays pending."""
        state = run.to_state() if isinstance(run, RunResult) else run
        items = [item for item in state.get_interruptions() if item.tool_name in self.tools]
        await asyncio.gather(*(self._resolve_one(state, item, timeout_s) for item in items))
        return state

    async def _resolve_one(
        self, state: RunState[Any], item: ToolApprovalItem, timeout_s: float | None
    ) -> None:
        call_id = str(item.call_id or "")
        refused = self._refused.pop(call_id, None)
        if refused is not None:
            state.reject(item, rejection_message=f"reviewq refused this call: {refused.message}")
            return
        outcome = self._outcomes.get(call_id)
        if outcome is None:
            # The SDK asked for approval without asking reviewq (arguments it could not inspect).
            arguments = json.loads(item.arguments or "{}")
            try:
                outcome = await self.submit(self.tools[str(item.tool_name)], arguments, call_id, [])
            except InvalidProposedAction as exc:
                state.reject(item, rejection_message=f"reviewq refused this call: {exc.message}")
                return
        if outcome.pending:
            outcome = await _call(self.client.wait, outcome.id, timeout_s)
            self._outcomes[call_id] = outcome
        if outcome.released:
            state.approve(item)
        elif outcome.final:
            verb = "denied" if outcome.denied else f"did not release ({outcome.status})"
            state.reject(
                item, rejection_message=f"A reviewer {verb} this call: {outcome.reason or 'no reason'}"
            )


async def _call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Calls a client method, awaited (the async client) or in a thread (the synchronous one)."""
    if asyncio.iscoroutinefunction(method):
        return await method(*args, **kwargs)
    return await asyncio.to_thread(method, *args, **kwargs)


def chat_messages(items: Any) -> list[dict[str, Any]]:
    """The Agents SDK's input items (Responses format) as OpenAI chat messages, as far as they
    are messages, tool calls and tool results; other items are left out."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    messages: list[dict[str, Any]] = []
    for item in items or []:
        entry = item if isinstance(item, dict) else getattr(item, "model_dump", lambda: {})()
        kind = entry.get("type")
        if kind == "function_call":
            call = {
                "id": entry.get("call_id"),
                "type": "function",
                "function": {"name": entry.get("name"), "arguments": entry.get("arguments") or "{}"},
            }
            if messages and messages[-1]["role"] == "assistant" and messages[-1].get("tool_calls"):
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = entry.get("output")
            text = output if isinstance(output, str) else json.dumps(output, default=str)
            messages.append({"role": "tool", "tool_call_id": entry.get("call_id"), "content": text})
        elif entry.get("role") in ("system", "developer", "user", "assistant"):
            text = _text(entry.get("content"))
            if text:
                messages.append({"role": entry["role"], "content": text})
    return messages


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for part in content or []:
        value = part.get("text") if isinstance(part, dict) else getattr(part, "text", None)
        if isinstance(value, str):
            parts.append(value)
    return "\n".join(parts)

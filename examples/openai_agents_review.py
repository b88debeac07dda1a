"""The OpenAI Agents SDK with reviewq as the approver of its tools.

    REVIEWQ_API_KEY=rq_... .venv/bin/python examples/openai_agents_review.py

With OPENAI_API_KEY set (and OPENAI_BASE_URL / OPENAI_MODEL for any OpenAI-compatible server)
the agent's LLM is that model; without it a scripted stand-in asks to cancel an order, so the
example runs with nothing but ``make run``. The cancellation stops the run with an interruption;
``approvals.resolve`` waits for the reviewer at http://127.0.0.1:8000/review/ and approves or
rejects it in the run's state, and the tool runs with the arguments reviewq released.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from agents import Agent, Model, ModelResponse, OpenAIChatCompletionsModel, RunConfig, Runner, Usage
from openai import AsyncOpenAI
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText
from reviewq_client import AsyncReviewqClient
from reviewq_client.openai_agents import ReviewqApprovals

client = AsyncReviewqClient.from_env()  # REVIEWQ_URL, REVIEWQ_API_KEY
approvals = ReviewqApprovals(client)


@approvals.tool
def cancel_pending_order(
    order_id: Annotated[str, "The order id, such as '#W0000000'."],
    reason: Literal["no longer needed", "ordered by mistake"],
) -> str:
    """Cancel a pending order and refund it."""
    return f"cancelled {order_id} ({reason})"


class ScriptedModel(Model):
    """Stands in for an LLM: calls the cancellation, then reports the tool's answer."""

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        outputs = [
            item for item in input if isinstance(item, dict) and item.get("type") == "function_call_output"
        ]
        if outputs:
            text = ResponseOutputText(
                type="output_text", text=f"Done: {outputs[-1]['output']}", annotations=[]
            )
            message = ResponseOutputMessage(
                id="msg_1", type="message", role="assistant", status="completed", content=[text]
            )
            return ModelResponse(output=[message], usage=Usage(), response_id=None)
        call = ResponseFunctionToolCall(
            type="function_call",
            call_id="call_cancel_1",
            name="cancel_pending_order",
            arguments=json.dumps({"order_id": "#W2378156", "reason": "no longer needed"}),
        )
        return ModelResponse(output=[call], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("the scripted model does not stream")


def model() -> Model:
    if not os.getenv("OPENAI_API_KEY"):
        return ScriptedModel()
    return OpenAIChatCompletionsModel(
        model=os.getenv("OPENAI_MODEL", "gpt-4o-mini"),
        openai_client=AsyncOpenAI(base_url=os.getenv("OPENAI_BASE_URL") or None),
    )


async def main() -> None:
    agent: Agent[Any] = Agent(
        name="support",
        instructions="Help customers with their orders.",
        model=model(),
        tools=[cancel_pending_order],
    )
    run_config = RunConfig(tracing_disabled=True)
    ask = "Cancel my order #W2378156, I no longer need it (no longer needed)."
    result = await Runner.run(agent, ask, run_config=run_config)
    while result.interruptions:
        print("held for review; decide at http://127.0.0.1:8000/review/")
        state = await approvals.resolve(result, timeout_s=600)
        result = await Runner.run(agent, state, run_config=run_config)
    print(result.final_output)
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())

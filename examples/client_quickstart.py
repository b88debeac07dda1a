"""reviewq_client in a few lines: a read is released at once; a cancellation waits for a reviewer.

    make run                                   # in another terminal
    .venv/bin/python manage.py create_agent_key my-agent --owner admin
    REVIEWQ_API_KEY=rq_... .venv/bin/python examples/client_quickstart.py

Approve, edit or deny the held cancellation at http://127.0.0.1:8000/review/ (as ``reviewer``).
"""

from __future__ import annotations

from reviewq_client import InvalidProposedAction, ReviewqClient, propose_tool_call

ORDER_ID = (
    "The order id, such as '#W0000000'. Be careful there is a '#' symbol at the beginning of the order id."
)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order_details",
            "description": "Get the status and details of an order.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string", "description": ORDER_ID}},
                "required": ["order_id"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "cancel_pending_order",
            "description": "Cancel a pending order and refund it.",
            "parameters": {
                "type": "object",
                "properties": {
                    "order_id": {"type": "string", "description": ORDER_ID},
                    "reason": {"type": "string", "enum": ["no longer needed", "ordered by mistake"]},
                },
                "required": ["order_id", "reason"],
            },
        },
    },
]


def main() -> None:
    with ReviewqClient.from_env() as client:  # REVIEWQ_URL, REVIEWQ_API_KEY
        # 1. Your LLM proposed a lookup: reviewq's policies release reads at once.
        lookup = client.submit(
            [{"role": "user", "content": "What is the status of my order #W2378156?"}],
            TOOLS,
            proposed_action=propose_tool_call("get_order_details", {"order_id": "#W2378156"}),
            wait_ms=5000,
        )
        print(f"lookup: {lookup.status} ({lookup.reason})")

        # 2. A cancellation moves money: it is held until a reviewer decides.
        cancel = client.submit(
            [{"role": "user", "content": "Cancel #W2378156, I no longer need it (no longer needed)."}],
            TOOLS,
            proposed_action=propose_tool_call(
                "cancel_pending_order", {"order_id": "#W2378156", "reason": "no longer needed"}
            ),
            wait_ms=2000,
        )
        print(f"cancellation: {cancel.status}")
        if cancel.pending:
            print(f"decide at {client.base_url.removesuffix('/api/v1')}/review/")
        outcome = client.wait(cancel.id, timeout_s=600)
        if outcome.released:
            for call in outcome.tool_calls:  # a reviewer may have edited them
                print(f"run {call.name}({call.arguments}) with idempotency key {outcome.action_id}")
        elif outcome.pending:
            client.cancel(outcome.id, "nobody decided in 10 minutes")
            print("withdrawn: nobody decided")
        else:
            print(f"not released: {outcome.status}: {outcome.reason}")

        # 3. Invalid proposals are refused with the validators' findings.
        try:
            client.submit(
                [{"role": "user", "content": "Where is my order #W2378156?"}],
                TOOLS,
                proposed_action=propose_tool_call("get_order_details", {"order_id": "#W9999999"}),
            )
        except InvalidProposedAction as refused:
            print("refused:", [issue["message"] for issue in refused.issues])


if __name__ == "__main__":
    main()

"""``@require_review``: tool functions that run only once reviewq released the call.

    REVIEWQ_API_KEY=rq_... .venv/bin/python examples/require_review_tools.py

The lookup runs at once (a read); the cancellation waits for a reviewer at
http://127.0.0.1:8000/review/ and then runs with the arguments they released (edit the reason,
say), or raises ``Denied`` with their reason.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from reviewq_client import Denied, ReviewqClient, ReviewTimeout

ORDER_ID = (
    "The order id, such as '#W0000000'. Be careful there is a '#' symbol at the beginning of the order id."
)
REASON = "The reason for cancellation, which should be either 'no longer needed' or 'ordered by mistake'."

client = ReviewqClient.from_env()  # REVIEWQ_URL, REVIEWQ_API_KEY


@client.require_review
def get_order_details(order_id: Annotated[str, ORDER_ID]) -> dict[str, Any]:
    """Get the status and details of an order."""
    return {"order_id": order_id, "status": "pending", "items": 2}


@client.require_review(timeout_s=600, on_deny="raise")
def cancel_pending_order(
    order_id: Annotated[str, ORDER_ID],
    reason: Annotated[Literal["no longer needed", "ordered by mistake"], REASON],
) -> str:
    """Cancel a pending order and refund it."""
    return f"cancelled {order_id} ({reason})"


def main() -> None:
    print(get_order_details("#W2378156"))
    print("waiting for a reviewer at http://127.0.0.1:8000/review/ ...")
    try:
        print(cancel_pending_order("#W2378156", "no longer needed"))
    except Denied as denied:
        print(f"denied: {denied.reason}")
    except ReviewTimeout:
        print("nobody decided in 10 minutes: the request was withdrawn")
    print("the tool definition sent to reviewq:", cancel_pending_order.tool["function"]["name"])


if __name__ == "__main__":
    main()

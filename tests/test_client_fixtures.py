"""Shared helpers of the Python client's tests (tests/test_client_*.py); it holds no test itself.

(Named ``test_client_*`` because those are the files the client's tests own; pytest collects
nothing from it.) The tests run the real ``reviewq_client`` against a live server on the test
database; a reviewer's decision is made with the services the review page calls, in the test's
thread, while the agent's side waits in another.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Literal

from django.db import connections
from reviewq_client import ReviewqClient, function_tool

from reviewq.models import ReviewItem, ToolSpec


def lookup_invoice(invoice_id: str) -> dict[str, Any]:
    """Look up an invoice's status and amount.

    Args:
        invoice_id: The invoice's id, such as INV-1001.
    """
    return {"invoice_id": invoice_id, "status": "paid", "amount": 120.0}


def refund_invoice(
    invoice_id: str, amount: float, reason: Literal["duplicate", "damaged", "other"] = "other"
) -> str:
    """Refund (part of) a paid invoice to the customer's card.

    Args:
        invoice_id: The invoice's id, such as INV-1001.
        amount: How much to refund, in euros.
        reason: Why.
    """
    return f"refunded {amount:.2f} EUR on {invoice_id} ({reason})"


def register_tools() -> None:
    """Ops know both tools, with the definitions the client derives from them: the lookup is a
    read (released at once), the refund moves money (held for a human)."""
    for fn, tags in ((lookup_invoice, ["read"]), (refund_invoice, ["payment"])):
        function = function_tool(fn)["function"]
        ToolSpec.objects.create(
            name=function["name"],
            description=function["description"],
            parameters=function["parameters"],
            risk_tags=tags,
        )


def client_for(url: str, agent: tuple[Any, str], **kwargs: Any) -> ReviewqClient:
    return ReviewqClient(url, agent[1], timeout=10, **kwargs)


def pending_item(timeout_s: float = 10, **filters: Any) -> ReviewItem:
    """The pending review item (matching ``filters``) once the live server has held one."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        item = ReviewItem.objects.filter(status="pending", **filters).order_by("-id").first()
        if item is not None:
            return item
        time.sleep(0.05)
    raise AssertionError("no item was held for review")


@contextmanager
def in_background(call: Callable[[], Any]) -> Iterator[Future[Any]]:
    """Runs ``call`` (the agent's side, which blocks until a decision) in another thread."""

    def run() -> Any:
        try:
            return call()
        finally:
            connections.close_all()  # this thread's own, if it touched the database

    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit(run)


def conversation(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]

"""``@require_review``: the gated function runs only once reviewq released the call, with the
released (reviewer-edited) arguments; a denial, an expiry or a timeout never runs it."""

from __future__ import annotations

import asyncio
import enum
from typing import Annotated, Any, Literal

import pytest
from reviewq_client import (
    AsyncReviewqClient,
    Denied,
    NotReleased,
    ReviewTimeout,
    function_tool,
    require_review,
)

from reviewq.models import Request, ReviewItem
from reviewq.services.decisions import review_approve, review_deny, review_edit
from tests.test_client_fixtures import (
    client_for,
    in_background,
    lookup_invoice,
    pending_item,
    refund_invoice,
    register_tools,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded")]


@pytest.fixture(autouse=True)
def _tools(seeded: None) -> None:
    register_tools()


class Recorder:
    """The tool functions, counting what actually ran."""

    def __init__(self) -> None:
        self.ran: list[dict[str, Any]] = []

    def lookup(self, invoice_id: str) -> dict[str, Any]:
        self.ran.append({"invoice_id": invoice_id})
        return lookup_invoice(invoice_id)

    def refund(self, invoice_id: str, amount: float, reason: str = "other") -> str:
        self.ran.append({"invoice_id": invoice_id, "amount": amount, "reason": reason})
        return refund_invoice(invoice_id, amount, reason)  # type: ignore[arg-type]


def gated(client: Any, fn: Any, model: Any, **options: Any) -> Any:
    """``fn`` gated under the definition ops registered for ``model`` (same name and schema)."""
    return require_review(client, fn, tool=function_tool(model), **options)


def test_a_released_read_runs_at_once(live_server_url: str, agent: Any) -> None:
    tools = Recorder()
    with client_for(live_server_url, agent) as client:
        lookup = client.require_review(tools.lookup, tool=function_tool(lookup_invoice))
        assert lookup("INV-1001") == {"invoice_id": "INV-1001", "status": "paid", "amount": 120.0}
    assert tools.ran == [{"invoice_id": "INV-1001"}]
    request = Request.objects.get()
    assert (request.status, request.proposed_by) == ("released", "agent")
    assert request.metadata["via"] == "reviewq_client.require_review"
    assert lookup.tool["function"]["name"] == "lookup_invoice"


def test_a_held_call_runs_with_the_reviewers_edited_arguments(
    live_server_url: str, agent: Any, reviewer: Any
) -> None:
    tools = Recorder()
    with client_for(live_server_url, agent) as client:
        refund = gated(client, tools.refund, refund_invoice, timeout_s=20)
        with in_background(lambda: refund("INV-1001", 80, reason="duplicate")) as call:
            item = pending_item()
            assert not tools.ran  # nothing runs while the call waits for a human
            arguments = (item.action_under_review or {})["tool_calls"][0]["arguments"]
            assert arguments == {"invoice_id": "INV-1001", "amount": 80, "reason": "duplicate"}
            review_edit(
                item_id=item.id,
                reviewer=reviewer,
                tool_calls=[{"name": "refund_invoice", "arguments": {**arguments, "amount": 45.5}}],
            )
            assert call.result(timeout=20) == "refunded 45.50 EUR on INV-1001 (duplicate)"
    assert tools.ran == [{"invoice_id": "INV-1001", "amount": 45.5, "reason": "duplicate"}]


def test_a_denial_raises_with_the_reason_and_never_runs(
    live_server_url: str, agent: Any, reviewer: Any
) -> None:
    tools = Recorder()
    with client_for(live_server_url, agent) as client:
        refund = gated(client, tools.refund, refund_invoice, timeout_s=20)
        with in_background(lambda: refund("INV-1001", 80)) as call:
            review_deny(item_id=pending_item().id, reviewer=reviewer, reason="already refunded last week")
            with pytest.raises(Denied) as denied:
                call.result(timeout=20)
        assert denied.value.reason == "already refunded last week"
        assert denied.value.outcome.denied

        # on_deny="return": the LLM is told why instead.
        polite = gated(client, tools.refund, refund_invoice, on_deny="return", timeout_s=20)
        with in_background(lambda: polite("INV-1001", 80)) as call:
            review_deny(item_id=pending_item().id, reviewer=reviewer, reason="needs a manager")
            assert call.result(timeout=20) == "refund_invoice was denied: needs a manager"
    assert tools.ran == []


def test_a_timeout_withdraws_the_request_and_raises(live_server_url: str, agent: Any) -> None:
    tools = Recorder()
    with client_for(live_server_url, agent) as client:
        refund = gated(client, tools.refund, refund_invoice, timeout_s=1)
        with pytest.raises(ReviewTimeout) as timed_out:
            refund("INV-1001", 80)
    request = Request.objects.get()
    assert timed_out.value.outcome.id == str(request.id)
    # Nobody can approve a call that nobody will run any more.
    assert request.status == "cancelled"
    assert ReviewItem.objects.get(request=request).status == "withdrawn"
    assert tools.ran == []


def test_a_withdrawn_request_is_not_released(live_server_url: str, agent: Any) -> None:
    tools = Recorder()
    with client_for(live_server_url, agent) as client:
        refund = gated(client, tools.refund, refund_invoice, timeout_s=20)
        with in_background(lambda: refund("INV-1001", 80)) as call:
            item = pending_item()
            client.cancel(str(item.request_id), "another agent handled it")
            with pytest.raises(NotReleased) as withdrawn:
                call.result(timeout=20)
    assert withdrawn.value.code == "cancelled"
    assert "another agent handled it" in str(withdrawn.value)
    assert tools.ran == []


def test_an_async_tool_with_the_async_client(live_server_url: str, agent: Any, reviewer: Any) -> None:
    ran: list[str] = []

    async def refund_invoice_async(invoice_id: str, amount: float, reason: str = "other") -> str:
        ran.append(invoice_id)
        return f"refunded {amount} on {invoice_id}"

    async def scenario() -> str:
        async with AsyncReviewqClient(live_server_url, agent[1]) as client:
            refund = client.require_review(
                refund_invoice_async, tool=function_tool(refund_invoice), timeout_s=20
            )
            return str(await refund("INV-1001", 80, reason="duplicate"))

    with in_background(lambda: asyncio.run(scenario())) as call:
        review_approve(item_id=pending_item().id, reviewer=reviewer)
        assert call.result(timeout=20) == "refunded 80 on INV-1001"
    assert ran == ["INV-1001"]


def test_a_plain_function_needs_the_synchronous_client() -> None:
    client = AsyncReviewqClient("http://reviewq.test", "rq_test")
    with pytest.raises(TypeError):
        client.require_review(lookup_invoice)


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


def test_the_tool_schema_comes_from_the_signature_and_docstring() -> None:
    def open_ticket(
        title: Annotated[str, "A one-line summary"],
        priority: Priority,
        tags: list[str],
        channel: Literal["email", "chat"] = "email",
        assignee: str | None = None,
        estimate_h: float = 1.5,
        urgent: bool = False,
    ) -> None:
        """Open a support ticket.

        Longer notes that stay out of the summary.

        Args:
            title: ignored, the annotation says it.
            tags: Labels to file it under.
        """

    function = function_tool(open_ticket)["function"]
    assert function["name"] == "open_ticket"
    assert function["description"] == "Open a support ticket."
    parameters = function["parameters"]
    assert parameters["required"] == ["title", "priority", "tags"]
    assert parameters["properties"] == {
        "title": {"type": "string", "description": "A one-line summary"},
        "priority": {"type": "string", "enum": ["low", "high"]},
        "tags": {"type": "array", "items": {"type": "string"}, "description": "Labels to file it under."},
        "channel": {"type": "string", "enum": ["email", "chat"], "default": "email"},
        "assignee": {"type": "string"},
        "estimate_h": {"type": "number", "default": 1.5},
        "urgent": {"type": "boolean", "default": False},
    }

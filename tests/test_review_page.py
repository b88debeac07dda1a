"""The reviewer's item page and queue row: decision facts first, a draft for a failed proposal,
a refused edit that keeps what was typed, and any status shown plainly."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils.html import escape

from reviewq import review_page
from reviewq.errors import ApplicationError
from reviewq.models import ReviewItem
from reviewq.services import intake
from router.backends.fake import FakeBackend
from tests.factories import risky_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded", "inline_pipeline")]

REFUND_TOOL = {
    "type": "function",
    "function": {
        "name": "issue_refund",
        "description": "Refund part of an order to the customer.",
        "parameters": {
            "type": "object",
            "properties": {
                "order_id": {"type": "string"},
                "amount": {"type": "number", "minimum": 0, "maximum": 1000},
                "notify": {"type": "boolean"},
            },
            "required": ["order_id", "amount"],
        },
    },
}


def refund_item(agent: Any, content: str, **extra: Any) -> ReviewItem:
    request, _ = intake.request_create(
        agent_key=agent[0],
        payload={"messages": [{"role": "user", "content": content}], "tools": [REFUND_TOOL], **extra},
    )
    return ReviewItem.objects.get(request=request)


def page_of(client: Client, reviewer: User, item: ReviewItem) -> str:
    client.force_login(reviewer)
    response = client.get(f"/review/{item.id}/")
    assert response.status_code == 200
    return str(response.content.decode())


def section(page: str, element_id: str) -> str:
    """The HTML from the element with ``element_id`` to the end of its first closing tag's block."""
    start = page.index(f'id="{element_id}"')
    return page[start : start + 4000]


def test_the_queue_row_and_the_item_top_lead_with_the_amount(
    client: Client, agent: Any, reviewer: User
) -> None:
    item = refund_item(agent, "Refund order_id=#W2378156 amount=899 please")
    assert item.action_under_review is not None
    client.force_login(reviewer)
    queue = client.get("/review/").content.decode()
    row = section(queue, f"item-{item.id}")
    assert re.search(
        r'class="arg money"><span class="arg-name">amount</span> <span class="arg-value">899<', row
    )
    assert "#W2378156" in row
    top = section(page_of(client, reviewer, item), "item-summary")
    assert '<span class="arg-value">899</span>' in top.split("</h1>")[0]


def test_the_item_page_shows_the_tool_grounding_and_the_agent(
    client: Client, agent: Any, reviewer: User
) -> None:
    item = refund_item(
        agent, "Refund order_id=#W2378156 amount=250 please", metadata={"ticket": "T-881", "channel": "chat"}
    )
    assert item.action_under_review is not None
    ReviewItem.objects.filter(id=item.id).update(
        action_under_review={
            **item.action_under_review,
            "tool_calls": [
                {"id": "c1", "name": "issue_refund", "arguments": {"order_id": "#W2378156", "amount": 899}}
            ],
        }
    )
    page = page_of(client, reviewer, item)
    assert "Refund part of an order to the customer." in page  # the tool's description
    facts = section(page, "call-facts-0")
    order_row = facts[facts.index("order_id") :]
    assert "✓ found" in order_row.split("</tr>")[0]
    amount_row = facts[facts.index("<code>amount</code>") :]
    assert "✗ not found" in amount_row.split("</tr>")[0]  # 899 was never in the conversation
    agent_facts = section(page, "agent-facts")
    assert "support-bot" in agent_facts and "T-881" in agent_facts and "chat" in agent_facts
    # Internal ids are folded away: inside a closed <details>, not in the page's first screen.
    details = page[page.index('<details id="raw-details">') :]
    assert str(item.request_id) in details.split("</details>")[0]
    assert item.request_id.hex not in page[: page.index('<details id="raw-details">')].replace("-", "")


def test_a_plan_that_makes_the_same_call_twice_is_flagged(client: Client, agent: Any, reviewer: User) -> None:
    item = refund_item(agent, "Refund order_id=#W2378156 amount=30")
    call = {"name": "issue_refund", "arguments": {"order_id": "#W2378156", "amount": 30}}
    ReviewItem.objects.filter(id=item.id).update(
        action_under_review={
            "id": "act_1",
            "type": "tool_calls",
            "tool_calls": [{"id": "c1", **call}, {"id": "c2", **call}],
        }
    )
    page = page_of(client, reviewer, item)
    assert 'id="duplicate-1"' in page and 'id="duplicate-0"' not in page
    assert "same call twice" in section(page, "item-summary").split("</h1>")[0]
    client.force_login(reviewer)
    assert "same call twice" in section(client.get("/review/").content.decode(), f"item-{item.id}")


def _invalid(amount: float) -> str:
    # order_id is not in the conversation: grounding refuses every one of these answers.
    return json.dumps({"name": "issue_refund", "arguments": {"order_id": "#W9999999", "amount": amount}})


def test_no_valid_proposal_opens_prefilled_from_the_last_parseable_attempt(
    client: Client, agent: Any, reviewer: User
) -> None:
    # The first attempt, then the last parseable one; whatever attempts follow are not JSON.
    FakeBackend.scripted_outputs.extend([_invalid(1), _invalid(120), *["not json"] * 10])
    item = refund_item(agent, "Refund amount=120 for the lamp, I lost the order number")
    assert item.action_under_review is None
    page = page_of(client, reviewer, item)
    assert "No valid proposal" in section(page, "item-summary")
    assert re.search(r'id="call-0-amount" name="call-0-amount" value="120"', page)
    assert re.search(r'id="call-0-order_id" name="call-0-order_id" value="#W9999999"', page)
    assert "grounding" in section(page, "attempt-errors")  # what to fix, beside the draft
    assert "Pre-filled from" in page
    # Saving the corrected draft releases it.
    client.post(
        f"/review/{item.id}/edit", {"mode": "form", "call-0-order_id": "#W2378156", "call-0-amount": "120"}
    )
    assert ReviewItem.objects.get(id=item.id).status == ReviewItem.Status.EDITED


def test_no_parseable_attempt_starts_from_the_first_tools_empty_arguments(
    client: Client, agent: Any, reviewer: User
) -> None:
    FakeBackend.scripted_outputs.extend(["not json"] * 12)
    item = refund_item(agent, "Refund amount=120 please")
    assert item.action_under_review is None
    page = page_of(client, reviewer, item)
    assert 'id="edit-form"' in page
    assert re.search(r'id="call-0-amount" name="call-0-amount" value=""', page)
    raw = section(page, "raw-json")
    assert escape('"order_id": null') in raw and escape('"amount": null') in raw


def test_a_refused_edit_keeps_what_was_typed_beside_the_error(
    client: Client, agent: Any, reviewer: User
) -> None:
    item = refund_item(agent, "Refund order_id=#W2378156 amount=250 please")
    client.force_login(reviewer)
    response = client.post(
        f"/review/{item.id}/edit",
        {"mode": "form", "call-0-order_id": "#W2378157", "call-0-amount": "1200", "call-0-notify": "on"},
    )
    page = response.content.decode()
    assert "1200 is greater than the maximum of 1000" in section(page, "edit-error")
    assert 'value="#W2378157"' in page and 'value="1200"' in page  # nothing typed is lost
    assert re.search(r'id="call-0-notify" name="call-0-notify" checked', page)
    assert re.search(
        r'id="call-0-amount"[^>]*aria-invalid="true" aria-describedby="call-0-amount-error"', page
    )
    assert 'id="call-0-amount-error"' in page
    assert 'id="call-0-order_id" name="call-0-order_id" value="#W2378157" data-kind="text" required>' in page

    response = client.post(
        f"/review/{item.id}/edit", {"mode": "form", "call-0-order_id": "x", "call-0-amount": "lots"}
    )
    page = response.content.decode()
    assert "must be a number" in page and 'value="lots"' in page
    assert 'id="call-0-amount-error"' in page

    response = client.post(
        f"/review/{item.id}/edit", {"mode": "json", "raw_json": '[{"name": "issue_refund"'}
    )
    page = response.content.decode()
    assert escape('[{"name": "issue_refund"') in section(page, "raw-json")
    assert '<details id="json-editor" open>' in page
    assert ReviewItem.objects.get(id=item.id).status == ReviewItem.Status.PENDING


def test_a_withdrawn_item_says_the_agent_withdrew_it(client: Client, agent: Any, reviewer: User) -> None:
    request, _ = intake.request_create(agent_key=agent[0], payload=risky_body())
    item = ReviewItem.objects.get(request=request)
    ReviewItem.objects.filter(id=item.id).update(status="withdrawn")
    page = page_of(client, reviewer, item)
    assert "Withdrawn by the agent" in section(page, "item-status")
    assert 'id="approve"' not in page and 'id="edit-form"' not in page
    ReviewItem.objects.filter(id=item.id).update(status="archived-by-ops")  # a status added later
    assert "archived-by-ops" in section(page_of(client, reviewer, item), "item-status")


# --- Units ---


def test_grounding_facts_reuse_the_pipelines_check() -> None:
    conversation = [{"role": "user", "content": "Refund order #W2378156, the lamp"}]
    facts = review_page.grounding_facts(
        {"order_id": "W2378156", "amount": 899, "reason": "broken lamp", "quantity": 2, "notify": True},
        conversation,
        None,
    )
    assert {fact.path: fact.grounding for fact in facts} == {
        "order_id": "found",  # separators and case ignored, as the pipeline does
        "amount": "missing",  # money always needs evidence
        "reason": "free",  # free text needs none
        "quantity": "free",  # nor a small count
        "notify": "free",  # a boolean is shown too, though nothing checks it
    }
    assert facts[-1].value == "true"


def test_the_summary_puts_the_amount_first_and_truncates_long_values() -> None:
    summary = review_page.action_summary(
        {
            "type": "tool_calls",
            "tool_calls": [
                {"name": "issue_refund", "arguments": {"order_id": "#W1", "note": "x" * 500, "amount": 12500}}
            ],
        }
    )
    [call] = summary.calls
    assert call.arguments[0].name == "amount" and call.arguments[0].money
    assert call.arguments[0].value == "12,500"
    assert all(len(argument.value) <= 40 for argument in call.arguments)
    nothing = review_page.action_summary(None, [REFUND_TOOL])
    assert (nothing.text, nothing.offered) == ("no valid proposal", ["issue_refund"])


def test_field_errors_name_the_field_of_the_call_the_error_names() -> None:
    calls = [{"name": "a", "arguments": {}}, {"name": "a", "arguments": {}}]
    error = ApplicationError(
        "invalid_edit",
        "tool call 1: schema at $.arguments.amount: 900 is greater than the maximum of 500",
        extra={
            "errors": [{"validator": "schema", "path": "$.arguments.amount", "message": "too big"}],
            "call_index": 1,
        },
    )
    assert review_page.field_errors(error, calls) == {"call-1-amount": "too big"}
    typed = ApplicationError("invalid_edit", "a.amount must be a number", extra={"field": "call-0-amount"})
    assert review_page.field_errors(typed, calls) == {"call-0-amount": "a.amount must be a number"}

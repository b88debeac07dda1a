"""The reviewer's path in real Chromium: a held item appears live, an edit is checked, the agent sees it."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest
from django.contrib.auth.models import User

from reviewq.models import ReviewItem
from tests.live import ARTIFACTS, logged_in_page

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded")]
# An item page's shortcuts work once it has been on screen this long (static/review.js).
SHORTCUTS_ARMED_MS = 900

REFUND_TOOL = {
    "type": "function",
    "function": {
        "name": "issue_refund",
        "description": "Refund part of an order to the customer.",
        "parameters": {
            "type": "object",
            "properties": {
                "order_id": {"type": "string"},
                "amount": {"type": "number", "minimum": 0, "maximum": 500},
                "notify": {"type": "boolean"},
            },
            "required": ["order_id", "amount"],
        },
    },
}


def api(url: str, key: str, path: str, body: dict | None = None) -> Any:
    request = urllib.request.Request(
        f"{url}/api/v1{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_a_reviewer_edits_and_approves_a_live_item(
    live_server_url: str, browser: Any, reviewer: User, agent: Any
) -> None:
    errors: list[str] = []
    page = logged_in_page(browser, live_server_url, reviewer)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{live_server_url}/review/")
    page.wait_for_selector("[data-live=connected]", timeout=10_000)  # the socket's snapshot arrived

    posted = api(
        live_server_url,
        agent[1],
        "/requests",
        {
            "messages": [{"role": "user", "content": "Refund order_id=#W2378156 amount=250 please"}],
            "tools": [REFUND_TOOL],
        },
    )
    started = time.monotonic()
    row = page.wait_for_selector("#queue-items .item", timeout=15_000)
    assert row is not None
    print(f"held item appeared {1000 * (time.monotonic() - started):.0f} ms after the POST answered")
    assert "issue_refund" in row.inner_text()
    assert page.locator("#queue-count").inner_text() == "1"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "queue.png"), full_page=True)

    row.click()
    page.wait_for_selector("#edit-form")
    item = ReviewItem.objects.get(request_id=posted["id"])
    assert page.locator("#call-0-amount").input_value() == "250"
    page.screenshot(path=str(ARTIFACTS / "item.png"), full_page=True)

    # A value that is not a number, then one above the schema's maximum: both refused, nothing lost.
    page.fill("#call-0-amount", "lots")
    page.click("#save-edit")
    assert "must be a number" in page.locator("#edit-error").inner_text()
    page.fill("#call-0-amount", "900")
    page.click("#save-edit")
    assert "900 is greater than the maximum of 500" in page.locator("#edit-error").inner_text()
    assert page.locator("#call-0-amount").input_value() == "900"  # the typed value stays
    assert ReviewItem.objects.get(id=item.id).status == "pending"

    page.fill("#call-0-amount", "120.5")
    page.check("#call-0-notify")
    page.click("#save-edit")
    page.wait_for_url(f"{live_server_url}/review/")

    final = api(live_server_url, agent[1], f"/requests/{posted['id']}")
    assert final["status"] == "released"
    [call] = final["action"]["tool_calls"]
    assert call["arguments"] == {"order_id": "#W2378156", "amount": 120.5, "notify": True}  # types preserved
    assert final["decision"]["decision"] == "edit" and final["decision"]["reviewer"] == "alice"
    assert errors == []


def test_keyboard_shortcuts_deny_with_a_reason(
    live_server_url: str, browser: Any, reviewer: User, agent: Any
) -> None:
    posted = api(
        live_server_url,
        agent[1],
        "/requests",
        {
            "messages": [{"role": "user", "content": "Refund order_id=#W2378156 amount=30"}],
            "tools": [REFUND_TOOL],
        },
    )
    deadline = time.monotonic() + 15
    while not ReviewItem.objects.filter(request_id=posted["id"]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    item = ReviewItem.objects.get(request_id=posted["id"])
    page = logged_in_page(browser, live_server_url, reviewer)
    page.goto(f"{live_server_url}/review/{item.id}/")
    page.wait_for_timeout(SHORTCUTS_ARMED_MS)
    page.keyboard.press("d")
    assert page.evaluate("document.activeElement.id") == "reason"
    page.keyboard.type("the customer did not confirm")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    final = api(live_server_url, agent[1], f"/requests/{posted['id']}")
    assert final["status"] == "denied"
    assert final["decision"]["reason"] == "the customer did not confirm"


CANCEL_TOOL = {
    "type": "function",
    "function": {
        "name": "cancel_pending_order",
        "description": "Cancel a pending order and refund it.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "reason": {"type": "string"}},
            "required": ["order_id", "reason"],
        },
    },
}


def _held(posted: dict[str, Any]) -> ReviewItem:
    deadline = time.monotonic() + 15
    while not ReviewItem.objects.filter(request_id=posted["id"]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return ReviewItem.objects.get(request_id=posted["id"])


def _rows(page: Any) -> set[str]:
    return set(page.eval_on_selector_all("#queue-items .item", "rows => rows.map(r => r.id)"))


def test_the_live_queue_serves_only_the_filtered_view(
    live_server_url: str, browser: Any, reviewer: User, agent: Any
) -> None:
    """A reviewer filtering by group or by risk tag sees, live and after a reconnect, only the
    items in that view (the socket once sent every pending item whatever the filter)."""
    from django.contrib.auth.models import Group

    from reviewq.models import RiskPolicy, ToolSpec

    payments = Group.objects.create(name="payments-team")
    reviewer.groups.add(payments)
    ToolSpec.objects.create(
        name="issue_refund", description="Refund part of an order.", risk_tags=["payment"]
    )
    RiskPolicy.objects.create(
        name="Refunds go to the payments team",
        priority=5,
        tool_pattern="issue_refund",
        decision=RiskPolicy.Decision.HUMAN,
        reviewer_group=payments,
    )
    by_group = logged_in_page(browser, live_server_url, reviewer)
    by_group.goto(f"{live_server_url}/review/?group=payments-team")
    by_tag = logged_in_page(browser, live_server_url, reviewer)
    by_tag.goto(f"{live_server_url}/review/?tag=destructive")
    for page in (by_group, by_tag):
        page.wait_for_selector("[data-live=connected]", timeout=10_000)

    refund = _held(
        api(
            live_server_url,
            agent[1],
            "/requests",
            {
                "messages": [{"role": "user", "content": "Refund order_id=#W2378156 amount=25"}],
                "tools": [REFUND_TOOL],
            },
        )
    )
    cancellation = _held(
        api(
            live_server_url,
            agent[1],
            "/requests",
            {
                "messages": [
                    {"role": "user", "content": "Cancel order_id=#W2378156 reason=no longer needed"}
                ],
                "tools": [CANCEL_TOOL],
            },
        )
    )
    assert refund.reviewer_group_id == payments.id and cancellation.reviewer_group_id is None
    assert "destructive" in cancellation.risk_tags and "destructive" not in refund.risk_tags
    by_group.wait_for_selector(f"#item-{refund.id}", timeout=10_000)
    by_tag.wait_for_selector(f"#item-{cancellation.id}", timeout=10_000)
    time.sleep(0.5)  # any push of the other item to either page has arrived by now
    assert _rows(by_group) == {f"item-{refund.id}"}
    assert _rows(by_tag) == {f"item-{cancellation.id}"}
    assert by_group.locator("#queue-count").inner_text() == "1"

    # A reconnect's snapshot is filtered the same way (the unfiltered page sees both).
    for page in (by_group, by_tag):
        page.reload()
        page.wait_for_selector("[data-live=connected]", timeout=10_000)
    assert _rows(by_group) == {f"item-{refund.id}"}
    assert _rows(by_tag) == {f"item-{cancellation.id}"}
    everything = logged_in_page(browser, live_server_url, reviewer)
    everything.goto(f"{live_server_url}/review/")
    everything.wait_for_selector("[data-live=connected]", timeout=10_000)
    assert _rows(everything) == {f"item-{refund.id}", f"item-{cancellation.id}"}


def test_approving_a_payment_is_a_deliberate_act(
    live_server_url: str, browser: Any, reviewer: User, agent: Any
) -> None:
    """``a`` on a payment opens a confirm step naming the action; a second ``a`` approves nothing;
    and after a decision, a key pressed at once never acts on the next item."""
    posted = [
        api(
            live_server_url,
            agent[1],
            "/requests",
            {
                "messages": [{"role": "user", "content": f"Refund order_id=#W237815{n} amount=30"}],
                "tools": [REFUND_TOOL],
            },
        )
        for n in (6, 7)
    ]
    first, second = (_held(request) for request in posted)
    assert first.needs_confirmed_approval and second.needs_confirmed_approval
    page = logged_in_page(browser, live_server_url, reviewer)
    page.goto(f"{live_server_url}/review/{first.id}/")
    page.wait_for_timeout(SHORTCUTS_ARMED_MS)
    page.keyboard.press("a")
    dialog = page.locator("#confirm-approve")
    assert dialog.is_visible()
    assert "issue_refund" in page.locator("#confirm-approve-action").inner_text()
    page.keyboard.press("a")  # the 0.31 s double press that once approved two items
    page.wait_for_timeout(300)
    assert ReviewItem.objects.get(id=first.id).status == "pending"

    with page.expect_navigation():
        page.click("#confirm-approve-yes")
    assert ReviewItem.objects.get(id=first.id).status == "approved"
    assert page.url.endswith(f"/review/{second.id}/")  # the next item
    page.keyboard.press("a")  # at once: meant for the item just decided
    page.wait_for_timeout(SHORTCUTS_ARMED_MS)
    assert not page.locator("#confirm-approve").is_visible()
    assert ReviewItem.objects.get(id=second.id).status == "pending"

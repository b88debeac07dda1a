"""The reviewer's pages in real Chromium as an on-call reviewer meets them: the amount in the row and
at the top, a failed proposal opened as a draft, a refused edit that loses nothing, a phone-sized
screen, and no serious accessibility problem (axe-core, run inside the page)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from reviewq.models import ReviewItem
from tests.conftest import IN_CI
from tests.live import ARTIFACTS, logged_in_page
from tests.test_review_browser import REFUND_TOOL, api

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded")]
PHONE = {"width": 390, "height": 844}
# axe-core rules are graded minor, moderate, serious or critical: these two fail the test.
FAILING_IMPACTS = ("critical", "serious")


def axe_script() -> Path:
    """axe-core's axe.min.js, as the axe-playwright-python package ships it (requirements-dev.txt)."""
    try:
        from axe_playwright_python.base import AXE_FILE_PATH
    except ImportError:
        if IN_CI:
            pytest.fail("axe-playwright-python is not installed (requirements-dev.txt)")
        pytest.skip("axe-playwright-python is not installed (pip install -r requirements-dev.txt)")
    return Path(AXE_FILE_PATH)


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """The critical and serious violations axe-core finds on the page as it stands."""
    page.add_script_tag(path=str(axe_script()))
    violations = page.evaluate(
        """async () => {
            const results = await axe.run(document, {resultTypes: ["violations"]});
            return results.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ")),
            }));
        }"""
    )
    return [violation for violation in violations if violation["impact"] in FAILING_IMPACTS]


def held(url: str, key: str, content: str) -> ReviewItem:
    posted = api(
        url, key, "/requests", {"messages": [{"role": "user", "content": content}], "tools": [REFUND_TOOL]}
    )
    deadline = time.monotonic() + 15
    while not ReviewItem.objects.filter(request_id=posted["id"]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return ReviewItem.objects.get(request_id=posted["id"])


def test_the_amount_leads_the_row_and_the_item(
    live_server_url: str, browser: Any, reviewer: User, agent: Any
) -> None:
    small = held(live_server_url, agent[1], "Refund order_id=#W2378156 amount=1 please")
    large = held(live_server_url, agent[1], "Refund order_id=#W2378157 amount=450 please")
    page = logged_in_page(browser, live_server_url, reviewer)
    page.goto(f"{live_server_url}/review/")
    page.wait_for_selector("[data-live=connected]", timeout=10_000)
    for item, amount in ((small, "1"), (large, "450")):
        money = page.locator(f"#item-{item.id} .arg.money")
        assert money.locator(".arg-name").inner_text() == "amount"
        assert money.locator(".arg-value").inner_text() == amount
        assert money.is_visible()
    # The amount is set apart: larger and bolder than the row's other arguments.
    weight = page.eval_on_selector(
        f"#item-{large.id} .money .arg-value", "e => getComputedStyle(e).fontWeight"
    )
    assert int(weight) >= 700

    page.click(f"#item-{large.id}")
    page.wait_for_selector("#item-summary")
    assert page.locator("#item-summary .money .arg-value").inner_text() == "450"
    assert "issue_refund" in page.locator("#item-summary").inner_text()
    assert "Refund part of an order to the customer." in page.locator("#call-facts-0").inner_text()
    assert not page.locator("#internal-ids").is_visible()  # folded away until asked for


def test_a_failed_proposal_opens_as_a_draft_of_the_models_attempt(
    live_server_url: str, browser: Any, reviewer: User, agent: Any
) -> None:
    # No order id in the conversation: the model's answers fail grounding, and nothing is proposed.
    item = held(live_server_url, agent[1], "Refund amount=120 for the broken lamp please")
    assert item.action_under_review is None
    page = logged_in_page(browser, live_server_url, reviewer)
    page.goto(f"{live_server_url}/review/{item.id}/")
    assert "No valid proposal" in page.locator("#item-summary").inner_text()
    assert page.locator("#call-0-amount").input_value() == "120"  # the attempt's values, not a blank box
    assert page.locator("#call-0-order_id").input_value() == "unknown"
    assert "grounding" in page.locator("#attempt-errors").inner_text()
    assert not page.locator("#approve").count()  # nothing valid to approve

    page.fill("#call-0-order_id", "#W2378156")
    page.fill("#call-0-amount", "2000")
    page.click("#save-edit")
    assert "2000 is greater than the maximum of 500" in page.locator("#edit-error").inner_text()
    assert page.locator("#call-0-order_id").input_value() == "#W2378156"  # what was typed stays
    assert page.locator("#call-0-amount").input_value() == "2000"
    assert page.locator("#call-0-amount").get_attribute("aria-invalid") == "true"
    assert page.locator("#call-0-amount-error").is_visible()
    page.wait_for_function("document.activeElement.id === 'call-0-amount'")  # where the reviewer works

    page.fill("#call-0-amount", "120")
    page.click("#save-edit")
    page.wait_for_url(f"{live_server_url}/review/")
    assert ReviewItem.objects.get(id=item.id).status == ReviewItem.Status.EDITED


def test_a_phone_shows_the_conversation_before_the_buttons_without_side_scrolling(
    live_server_url: str, browser: Any, reviewer: User, agent: Any
) -> None:
    item = held(
        live_server_url, agent[1], "Refund order_id=#W2378156 amount=30 please, the lamp arrived broken"
    )
    page = logged_in_page(browser, live_server_url, reviewer)
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server_url}/review/")
    page.wait_for_selector("[data-live=connected]", timeout=10_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "queue-390.png"), full_page=True)

    page.goto(f"{live_server_url}/review/{item.id}/")
    page.locator("#raw-details").evaluate("d => d.open = true")
    page.locator("#attempts-details").evaluate("d => d.open = true")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.screenshot(path=str(ARTIFACTS / "item-390.png"), full_page=True)
    conversation = page.locator("#conversation").bounding_box()
    for button in ("#approve", "#deny"):
        box = page.locator(button).bounding_box()
        assert conversation and box and conversation["y"] + conversation["height"] <= box["y"]
    before = page.evaluate(
        "Boolean(document.getElementById('conversation').compareDocumentPosition("
        "document.getElementById('approve')) & Node.DOCUMENT_POSITION_FOLLOWING)"
    )
    assert before


def test_the_queue_marks_the_selected_row_and_announces_new_ones(
    live_server_url: str, browser: Any, reviewer: User, agent: Any
) -> None:
    first = held(live_server_url, agent[1], "Refund order_id=#W2378156 amount=30")
    page = logged_in_page(browser, live_server_url, reviewer)
    page.goto(f"{live_server_url}/review/")
    page.wait_for_selector("[data-live=connected]", timeout=10_000)
    page.keyboard.press("j")
    assert page.evaluate("document.activeElement.id") == f"item-{first.id}"
    outline = page.eval_on_selector(f"#item-{first.id}", "e => getComputedStyle(e).outlineStyle")
    assert outline != "none"

    second = held(live_server_url, agent[1], "Refund order_id=#W2378157 amount=75")
    page.wait_for_selector(f"#item-{second.id}", timeout=10_000)
    announcer = page.locator("#queue-announcer")
    assert announcer.get_attribute("aria-live") == "polite"
    page.wait_for_function("document.getElementById('queue-announcer').textContent.includes('75')")
    assert "New held action: issue_refund" in announcer.inner_text()


def test_axe_finds_no_serious_problem_on_the_reviewers_pages(
    live_server_url: str, browser: Any, reviewer: User, agent: Any
) -> None:
    item = held(live_server_url, agent[1], "Refund order_id=#W2378156 amount=30 please")
    failed = held(live_server_url, agent[1], "Refund amount=120 for the broken lamp please")
    assert failed.action_under_review is None
    page = logged_in_page(browser, live_server_url, reviewer)
    found = {}
    for name, path in (
        ("queue", "/review/"),
        ("item", f"/review/{item.id}/"),
        ("no valid proposal", f"/review/{failed.id}/"),
    ):
        for viewport in ({"width": 1280, "height": 900}, PHONE):
            page.set_viewport_size(viewport)
            page.goto(f"{live_server_url}{path}")
            if path == "/review/":
                page.wait_for_selector("[data-live=connected]", timeout=10_000)
            found[f"{name} at {viewport['width']}px"] = axe_violations(page)
    # After a refused edit too: the error and the marked field.
    page.goto(f"{live_server_url}/review/{item.id}/")
    page.fill("#call-0-amount", "lots")
    page.click("#save-edit")
    page.wait_for_selector("#edit-error")
    found["refused edit"] = axe_violations(page)
    signed_out = browser.new_context(viewport=PHONE).new_page()
    signed_out.goto(f"{live_server_url}/accounts/login/")
    assert signed_out.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    found["login at 390px"] = axe_violations(signed_out)
    assert found == {where: [] for where in found}

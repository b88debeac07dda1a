"""The dashboard in a real browser: the charts render, and the page logs no errors."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db.models import F

from reviewq.models import Request, ReviewItem
from reviewq.services import decisions, intake
from router.backends.fake import FakeBackend
from tests.factories import read_body, risky_body
from tests.live import ARTIFACTS, logged_in_page

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded", "inline_pipeline")]


@pytest.fixture
def traffic(agent: Any, reviewer: User) -> None:
    """A few requests of every kind, some of them hours ago, so the charts have shape.

    A fixture listed before ``browser``: Playwright's event loop must not be running yet when
    the services push to reviewers (that push is synchronous code).
    """
    key = agent[0]
    for _ in range(4):
        intake.request_create(agent_key=key, payload=read_body())
    FakeBackend.scripted_outputs.extend(['{"name":"get_order_details","arguments":{"order_id":"#W404"}}'] * 2)
    intake.request_create(agent_key=key, payload=read_body())
    for decide in ("approve", "edit", "deny", None):
        request, _ = intake.request_create(agent_key=key, payload=risky_body())
        item = ReviewItem.objects.get(request=request)
        if decide == "approve":
            decisions.review_approve(item_id=item.id, reviewer=reviewer)
        elif decide == "edit":
            decisions.review_edit(
                item_id=item.id,
                reviewer=reviewer,
                tool_calls=[
                    {
                        "name": "cancel_pending_order",
                        "arguments": {"order_id": "#W2378156", "reason": "ordered by mistake"},
                    }
                ],
            )
        elif decide == "deny":
            decisions.review_deny(item_id=item.id, reviewer=reviewer, reason="customer did not confirm")
    # Spread them over the last hours, each keeping its own end-to-end time.
    for index, request_id in enumerate(Request.objects.order_by("created_at").values_list("id", flat=True)):
        earlier = timedelta(hours=index % 6)
        Request.objects.filter(id=request_id).update(
            created_at=F("created_at") - earlier, finished_at=F("finished_at") - earlier
        )


def test_the_dashboard_renders_without_console_errors(
    live_server_url: str,
    traffic: None,
    browser: Any,
    reviewer: User,
) -> None:
    page = logged_in_page(browser, live_server_url, reviewer)
    errors: list[str] = []

    def on_console(message: Any) -> None:
        if message.type == "error":
            errors.append(f"{message.text} at {message.location}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))

    response = page.goto(f"{live_server_url}/dashboard/?window=24h")
    assert response is not None and response.status == 200
    page.wait_for_selector("svg.chart rect")
    assert page.locator("svg.chart").count() == 9
    assert page.locator("#tile-requests").inner_text() == "9"
    title = page.locator("#chart-requests-per-hour-by-outcome > title").text_content() or ""
    assert title.startswith("Requests per hour by outcome")
    page.get_by_role("link", name="7d").click()
    page.wait_for_url("**/dashboard/?window=7d")
    page.wait_for_selector("svg.chart rect")
    page.get_by_role("link", name="24h").click()
    page.wait_for_url("**/dashboard/?window=24h")
    page.wait_for_load_state("networkidle")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert errors == []


@pytest.fixture
def learning_loop(traffic: None, settings: Any, tmp_path: Any) -> None:
    """Clusters and a dataset built from the traffic, and a replayed adapter candidate."""
    from router.models import Adapter, ModelSpec
    from telemetry.clusters import build_clusters
    from telemetry.datasets import DatasetOptions, build_dataset

    settings.DATA_DIR = tmp_path
    build_clusters()
    dataset = build_dataset(DatasetOptions())
    Adapter.objects.create(
        name="qwen-all-v1",
        base=ModelSpec.objects.get(name="qwen2.5-coder-0.5b-instruct"),
        path=str(tmp_path / "qwen-all-v1.gguf"),
        dataset_version=dataset.version,
        dataset_sha256=dataset.sha256,
        losses=[0.62, 0.30, 0.01],
        replay_report={
            "rows": 4,
            "base": {"exact": 0.25, "clusters": {}},
            "candidate": {"exact": 0.75, "clusters": {}},
        },
    )


def test_the_learning_loops_admin_pages_open(live_server_url: str, learning_loop: None, browser: Any) -> None:
    admin = User.objects.create_superuser("ops", password="pw-ops")
    page = logged_in_page(browser, live_server_url, admin)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    for path, expected in [
        ("/admin/telemetry/taskcluster/", "cancel_pending_order"),
        ("/admin/telemetry/dataset/", "1"),
        ("/admin/router/adapter/", "25% → 75% of 4"),
        ("/dashboard/observed/", "Observed LLM"),
        ("/dashboard/learning/", "qwen-all-v1"),
    ]:
        response = page.goto(f"{live_server_url}{path}")
        assert response is not None and response.status == 200, path
        assert expected in page.locator("body").inner_text(), path
    assert errors == []

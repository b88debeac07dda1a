"""The dashboard's figures, on requests that went through the real pipeline and review services."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db.models import Sum
from django.test import Client
from django.utils import timezone

from reviewq.models import GoldenTrace, Request, ReviewItem, RiskPolicy
from reviewq.services import decisions, intake, recovery
from router.backends.fake import FakeBackend
from router.contracts import Tier
from router.models import ModelSpec
from telemetry import charts, selectors
from telemetry.models import ModelCall
from tests.conftest import final_states_unlocked
from tests.factories import read_body, risky_body

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("seeded", "one_small_rung", "inline_pipeline"),
]

# The fake SLM invents this order id: the grounding validator rejects it, twice, so it escalates.
INVENTED = '{"name":"get_order_details","arguments":{"order_id":"#W404"}}'


@pytest.fixture
def fake_llm(db: Any) -> ModelSpec:
    """An enabled LLM tier answered by the fake backend, priced like a real large model."""
    return ModelSpec.objects.create(
        name="fake-llm",
        backend=ModelSpec.Backend.FAKE,
        model_path="fake",
        tier=Tier.LLM,
        strengths=["tool_use"],
        price_input_per_mtok=Decimal("3.00"),
        price_output_per_mtok=Decimal("15.00"),
        context_size=200000,
    )


def held_item(agent: Any) -> ReviewItem:
    request, _ = intake.request_create(agent_key=agent[0], payload=risky_body())
    return ReviewItem.objects.get(request=request)


@pytest.fixture
def traffic(agent: Any, reviewer: User, fake_llm: ModelSpec) -> dict[str, Any]:
    """A small day of work: released, escalated, approved, edited, denied, expired, blocked, pending."""
    key = agent[0]
    for _ in range(3):
        intake.request_create(agent_key=key, payload=read_body())
    FakeBackend.scripted_outputs.extend([INVENTED, INVENTED])
    escalated, _ = intake.request_create(agent_key=key, payload=read_body())

    approved, edited, denied, expired, _pending = (held_item(agent) for _ in range(5))
    decisions.review_approve(item_id=approved.id, reviewer=reviewer)
    decisions.review_edit(
        item_id=edited.id,
        reviewer=reviewer,
        tool_calls=[
            {
                "name": "cancel_pending_order",
                "arguments": {"order_id": "#W2378156", "reason": "ordered by mistake"},
            }
        ],
    )
    decisions.review_deny(item_id=denied.id, reviewer=reviewer, reason="customer did not confirm")
    ReviewItem.objects.filter(id=expired.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    recovery.expire_review_items()

    RiskPolicy.objects.create(
        name="No lookups today",
        priority=1,
        tool_pattern="get_order_details",
        decision=RiskPolicy.Decision.BLOCK,
    )
    blocked, _ = intake.request_create(agent_key=key, payload=read_body())
    return {"escalated": escalated, "blocked": blocked}


def test_outcomes_are_counted_per_bucket(traffic: dict[str, Any]) -> None:
    data = selectors.dashboard_get(window=selectors.window_get("24h"))
    assert Request.objects.get(id=traffic["escalated"].id).status == "released"
    assert Request.objects.get(id=traffic["blocked"].id).status == "denied"
    assert data.outcome_totals == {
        "auto_released": 4,
        "adjudicated": 0,
        "approved": 1,
        "edited": 1,
        "denied": 1,
        "blocked": 1,
        "expired": 1,
        "failed": 0,
        "cancelled": 0,
        "pending": 1,
    }
    assert data.requests_total == Request.objects.count() == 10
    assert len(data.bucket_starts) == 24
    # Everything happened just now: the last bucket holds it all.
    assert {key: series[-1] for key, series in data.outcomes_per_bucket.items()} == data.outcome_totals
    assert all(sum(series[:-1]) == 0 for series in data.outcomes_per_bucket.values())
    assert data.auto_release_rate == pytest.approx(4 / 10)
    assert data.pending_reviews == 1


def test_escalation_rate_and_triggers(traffic: dict[str, Any]) -> None:
    data = selectors.dashboard_get(window=selectors.window_get("24h"))
    calls = ModelCall.objects.filter(request_id=traffic["escalated"].id)
    assert [(c.tier, c.purpose) for c in calls] == [("slm", "propose"), ("slm", "retry"), ("llm", "escalate")]
    assert data.escalated_total == 1
    assert data.escalation_rate == pytest.approx(1 / 10)
    assert data.escalation_rate_per_bucket[-1] == pytest.approx(1 / 10)
    assert data.escalation_rate_per_bucket[:-1] == [None] * 23
    assert data.escalations_by_trigger == [("validation_failed", 1)]


def test_spend_against_the_all_llm_baseline(traffic: dict[str, Any], fake_llm: ModelSpec) -> None:
    # A pricier LLM that is switched off must not be the baseline; a cheaper enabled one would be.
    ModelSpec.objects.filter(tier="llm").exclude(id=fake_llm.id).update(
        enabled=False, price_input_per_mtok=1, price_output_per_mtok=1
    )
    data = selectors.dashboard_get(window=selectors.window_get("24h"))
    totals = ModelCall.objects.aggregate(spent=Sum("cost_usd"), tin=Sum("tokens_in"), tout=Sum("tokens_out"))
    baseline = fake_llm.cost_usd(totals["tin"], totals["tout"])
    spend = data.spend
    assert spend.actual_usd == totals["spent"]
    assert spend.baseline_model == "fake-llm"
    assert spend.baseline_usd == baseline
    assert (spend.tokens_in, spend.tokens_out) == (totals["tin"], totals["tout"])
    assert spend.saving_factor == pytest.approx(float(baseline / totals["spent"]))
    assert spend.saving_factor is not None and spend.saving_factor > 1  # the SLM did most of the work
    assert spend.actual_cumulative[-1] == pytest.approx(float(totals["spent"]))
    assert spend.baseline_cumulative[-1] == pytest.approx(float(baseline))
    llm_spent = ModelCall.objects.filter(tier="llm").aggregate(s=Sum("cost_usd"))["s"]
    assert spend.by_tier["llm"] == llm_spent > 0


def test_without_an_enabled_llm_the_seeded_prices_are_the_baseline(agent: Any) -> None:
    intake.request_create(agent_key=agent[0], payload=read_body())
    assert not ModelSpec.objects.filter(tier="llm", enabled=True).exists()
    seeded = ModelSpec.objects.get(name="claude-sonnet-4-6")
    data = selectors.dashboard_get(window=selectors.window_get("24h"))
    assert data.spend.baseline_model == seeded.name
    assert data.spend.baseline_usd == seeded.cost_usd(data.spend.tokens_in, data.spend.tokens_out)


def test_latency_percentiles(traffic: dict[str, Any]) -> None:
    # Known latencies: the SLM calls take 1..n ms in order, the LLM call 2 s.
    slm_ids = list(ModelCall.objects.filter(tier="slm").order_by("pk").values_list("pk", flat=True))
    for index, pk in enumerate(slm_ids, 1):
        ModelCall.objects.filter(pk=pk).update(latency_ms=index)
    ModelCall.objects.filter(tier="llm").update(latency_ms=2000)
    data = selectors.dashboard_get(window=selectors.window_get("24h"))
    n = len(slm_ids)
    expected = sorted(range(1, n + 1))
    slm = data.latency_by_tier["slm"]
    assert slm.count == n
    assert slm.p50 == pytest.approx(selectors.percentile(expected, 0.5))
    assert slm.p95 == pytest.approx(selectors.percentile(expected, 0.95))
    assert data.latency_by_tier["llm"] == selectors.Percentiles(1, 2000.0, 2000.0)

    end_to_end = data.latency_end_to_end
    finished = Request.objects.filter(finished_at__isnull=False)
    assert end_to_end["all"].count == finished.count() == 9
    assert end_to_end["human"].count == 4  # approved, edited, denied, expired
    assert end_to_end["automated"].count == 5
    for stats in end_to_end.values():
        assert stats.p50 is not None and stats.p95 is not None
        assert 0 <= stats.p50 <= stats.p95


def test_percentile_interpolates_like_percentile_cont() -> None:
    values = [float(v) for v in range(1, 101)]
    assert selectors.percentile(values, 0.5) == pytest.approx(50.5)
    assert selectors.percentile(values, 0.95) == pytest.approx(95.05)
    assert selectors.percentile([7.0], 0.95) == 7.0
    assert selectors.percentile([], 0.5) is None


def test_validator_failures_time_to_decision_and_edit_share(traffic: dict[str, Any]) -> None:
    data = selectors.dashboard_get(window=selectors.window_get("24h"))
    validated = ModelCall.objects.filter(error="").exclude(purpose="route").count()
    assert data.validated_calls == validated
    assert data.failed_validation_calls == 2
    assert [(r.validator, r.failures) for r in data.validator_rates] == [("grounding", 2)]
    assert data.validator_rates[0].rate == pytest.approx(2 / validated)

    traces = list(
        GoldenTrace.objects.order_by("time_to_decision_ms").values_list("time_to_decision_ms", flat=True)
    )
    assert data.time_to_decision.count == len(traces) == 3
    assert data.time_to_decision.p50 == pytest.approx(traces[1])
    assert set(data.time_to_decision_by_decision) == {"approve", "edit", "deny"}

    [share] = data.edit_share_by_tool
    assert (share.tool, share.decisions, share.edits) == ("cancel_pending_order", 3, 1)
    assert share.share == pytest.approx(1 / 3)


def test_the_window_bounds_what_is_counted(traffic: dict[str, Any]) -> None:
    old = traffic["escalated"]
    Request.objects.filter(id=old.id).update(created_at=timezone.now() - timedelta(days=2))
    day = selectors.dashboard_get(window=selectors.window_get("24h"))
    week = selectors.dashboard_get(window=selectors.window_get("7d"))
    assert day.requests_total == 9 and day.escalated_total == 0
    assert day.spend.tokens_in < week.spend.tokens_in
    assert week.requests_total == 10 and week.escalated_total == 1
    assert len(week.bucket_starts) == 28 and selectors.window_get("30d").buckets == 30
    assert sum(series[-1] for series in week.outcomes_per_bucket.values()) == 9


def test_adjudicated_outcomes_are_told_apart(agent: Any) -> None:
    # The adjudicator's trail: released or denied by policy after a second model's verdict.
    released, _ = intake.request_create(agent_key=agent[0], payload=read_body())
    denied, _ = intake.request_create(agent_key=agent[0], payload=read_body())
    intake.request_create(agent_key=agent[0], payload=read_body())  # released automatically
    verdict = {"verdict": "approve", "model": "gemma-3-270m"}
    with final_states_unlocked():
        Request.objects.filter(id=released.id).update(
            decision={"by": "policy", "decision": "adjudicated", "adjudication": verdict}
        )
        Request.objects.filter(id=denied.id).update(
            status="denied", decision={"by": "policy", "decision": "adjudicated", "adjudication": verdict}
        )
    data = selectors.dashboard_get(window=selectors.window_get("24h"))
    assert data.outcome_totals["adjudicated"] == 2
    assert data.outcome_totals["auto_released"] == 1
    assert data.outcome_totals["blocked"] == 0


def test_unknown_windows_are_refused() -> None:
    with pytest.raises(selectors.UnknownWindow):
        selectors.window_get("1y")
    assert selectors.window_get(None).key == "24h"


def test_charts_render_as_accessible_svg(traffic: dict[str, Any]) -> None:
    rendered = charts.dashboard_charts(selectors.dashboard_get(window=selectors.window_get("24h")))
    for name, svg in rendered.items():
        assert svg.startswith("<svg") and svg.endswith("</svg>"), name
        assert 'role="img"' in svg and "<title" in svg and "<desc" in svg, name
    assert "No data" not in rendered["outcomes"]
    assert "cancel_pending_order" in rendered["edit_share"]


def test_charts_escape_text() -> None:
    svg = charts.bar_chart(title="t", categories=["<script>"], series=[charts.Series("s", [1.0])])
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_the_page_needs_a_reviewer(client: Client, traffic: dict[str, Any], outsider: User) -> None:
    response = client.get("/dashboard/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    client.force_login(outsider)
    assert client.get("/dashboard/").status_code == 403


def test_the_page_shows_the_figures(client: Client, traffic: dict[str, Any], reviewer: User) -> None:
    client.force_login(reviewer)
    response = client.get("/dashboard/?window=7d")
    assert response.status_code == 200
    page = response.content.decode()
    assert page.count("<svg") == 9
    assert 'id="tile-requests">10<' in page
    assert 'id="tile-escalation">10%<' in page
    assert 'aria-current="page">7d<' in page
    assert client.get("/dashboard/?window=forever").status_code == 400


def test_staff_may_see_the_page(client: Client, traffic: dict[str, Any]) -> None:
    staff = User.objects.create_user("olga", password="pw-olga", is_staff=True)
    client.force_login(staff)
    assert client.get("/dashboard/?window=30d").status_code == 200

"""/metrics: the Prometheus text format, read from the database, for local or token-holding scrapers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.db.models import Sum
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from reviewq.models import GoldenTrace, Request, ReviewItem
from reviewq.services import decisions, intake
from router.backends.fake import FakeBackend
from telemetry.metrics import MODEL_CALL_BUCKETS, REQUEST_BUCKETS
from telemetry.models import ModelCall
from tests.factories import read_body, risky_body

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("seeded", "one_small_rung", "inline_pipeline"),
]

REMOTE = "10.1.2.3"
INVENTED = '{"name":"get_order_details","arguments":{"order_id":"#W404"}}'


@pytest.fixture
def traffic(agent: Any, reviewer: User) -> None:
    key = agent[0]
    intake.request_create(agent_key=key, payload=read_body())
    intake.request_create(agent_key=key, payload=read_body())
    # No LLM is enabled: the SLM's invented id is escalated, then held for a human.
    FakeBackend.scripted_outputs.extend([INVENTED, INVENTED])
    intake.request_create(agent_key=key, payload=read_body())
    for _ in range(2):
        intake.request_create(agent_key=key, payload=risky_body())
    first = ReviewItem.objects.filter(request__proposal__isnull=False).order_by("pk").first()
    assert first is not None
    decisions.review_approve(item_id=first.id, reviewer=reviewer)


def scrape(client: Client, **headers: Any) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """Samples by metric family: {(sample name, sorted labels): value}."""
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    families = {}
    for family in text_string_to_metric_families(response.content.decode()):
        families[family.name] = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value for sample in family.samples
        }
    return families


def test_the_exposition_matches_the_database(client: Client, traffic: None) -> None:
    metrics = scrape(client)

    assert metrics["reviewq_requests_received"] == {("reviewq_requests_received_total", ()): 5}
    finished = metrics["reviewq_requests"]
    assert finished[("reviewq_requests_total", (("status", "released"),))] == 3
    assert finished[("reviewq_requests_total", (("status", "denied"),))] == 0
    assert sum(finished.values()) == Request.objects.filter(finished_at__isnull=False).count()
    open_now = metrics["reviewq_requests_open"]
    assert open_now[("reviewq_requests_open", (("status", "awaiting_review"),))] == 2
    assert sum(open_now.values()) == 2

    outcomes = metrics["reviewq_request_outcomes"]
    assert outcomes == {
        ("reviewq_request_outcomes_total", (("outcome", "auto_released"),)): 2,
        ("reviewq_request_outcomes_total", (("outcome", "approved"),)): 1,
    }

    calls = metrics["reviewq_model_calls"]
    propose = (("model", "qwen2.5-coder-1.5b-instruct"), ("purpose", "propose"), ("tier", "slm"))
    assert (
        calls[("reviewq_model_calls_total", propose)] == ModelCall.objects.filter(purpose="propose").count()
    )
    assert sum(calls.values()) == ModelCall.objects.count()

    escalations = metrics["reviewq_escalations"]
    assert escalations == {("reviewq_escalations_total", (("trigger", "validation_failed"),)): 1}

    decisions = metrics["reviewq_decisions"]
    assert decisions[("reviewq_decisions_total", (("by", "policy"), ("decision", "auto")))] == 2
    assert decisions[("reviewq_decisions_total", (("by", "reviewer"), ("decision", "approve")))] == 1

    totals = ModelCall.objects.aggregate(tin=Sum("tokens_in"), tout=Sum("tokens_out"), cost=Sum("cost_usd"))
    tokens = metrics["reviewq_model_call_tokens"]
    assert (
        tokens[("reviewq_model_call_tokens_total", (("direction", "in"), ("tier", "slm")))] == totals["tin"]
    )
    assert (
        tokens[("reviewq_model_call_tokens_total", (("direction", "out"), ("tier", "slm")))] == totals["tout"]
    )
    cost = metrics["reviewq_cost_usd"][("reviewq_cost_usd_total", (("tier", "slm"),))]
    assert cost == pytest.approx(float(totals["cost"]))

    # By reviewer group, agent key and tool: the held invented-id answer has no valid proposal.
    agent = ("agent", "support-bot")
    assert metrics["reviewq_review_queue_pending"] == {
        ("reviewq_review_queue_pending", (agent, ("group", ""), ("tool", ""))): 1,
        ("reviewq_review_queue_pending", (agent, ("group", ""), ("tool", "cancel_pending_order"))): 1,
    }
    assert set(metrics["reviewq_review_queue_overdue"].values()) == {0}
    by_agent = metrics["reviewq_agent_requests"]
    assert sum(by_agent.values()) == Request.objects.filter(finished_at__isnull=False).count() == 3
    released = (
        "reviewq_agent_requests_total",
        (agent, ("outcome", "approved"), ("tool", "cancel_pending_order")),
    )
    assert by_agent[released] == 1


def test_overdue_items_are_counted_per_group(client: Client, traffic: None) -> None:
    group = Group.objects.create(name="payments")
    late = ReviewItem.objects.filter(status=ReviewItem.Status.PENDING, action_under_review__isnull=False)
    late.update(sla_due_at=timezone.now() - timedelta(minutes=1), reviewer_group=group)
    overdue = scrape(client)["reviewq_review_queue_overdue"]
    labels = (("agent", "support-bot"), ("group", "payments"), ("tool", "cancel_pending_order"))
    assert overdue[("reviewq_review_queue_overdue", labels)] == 1


def test_histograms_count_every_observation_in_cumulative_buckets(client: Client, traffic: None) -> None:
    ModelCall.objects.update(latency_ms=300)  # 0.3 s: above the 0.25 s bound, within the 0.5 s one
    first = ModelCall.objects.order_by("pk").first()
    assert first is not None
    ModelCall.objects.filter(pk=first.pk).update(latency_ms=20)
    metrics = scrape(client)

    latency = metrics["reviewq_model_call_latency_seconds"]
    n = ModelCall.objects.filter(error="").count()
    tier = ("tier", "slm")

    def bucket(le: float | str) -> float:
        return latency[("reviewq_model_call_latency_seconds_bucket", (("le", str(le)), tier))]

    assert bucket(0.025) == 1
    assert bucket(0.25) == 1
    assert bucket(0.5) == n
    assert bucket("+Inf") == n
    assert latency[("reviewq_model_call_latency_seconds_count", (tier,))] == n
    assert latency[("reviewq_model_call_latency_seconds_sum", (tier,))] == pytest.approx(
        (0.3 * (n - 1)) + 0.02
    )
    counts = [bucket(b) for b in MODEL_CALL_BUCKETS]
    assert counts == sorted(counts)

    finished = Request.objects.filter(finished_at__isnull=False)
    end_to_end = metrics["reviewq_request_latency_seconds"]
    assert end_to_end[("reviewq_request_latency_seconds_count", ())] == finished.count() == 3
    assert end_to_end[("reviewq_request_latency_seconds_bucket", (("le", "+Inf"),))] == 3
    slowest = max((r.finished_at - r.created_at) for r in finished if r.finished_at)
    expected = sum(((r.finished_at - r.created_at) for r in finished if r.finished_at), timedelta())
    assert end_to_end[("reviewq_request_latency_seconds_sum", ())] == pytest.approx(
        expected.total_seconds(), abs=1e-3
    )
    within = next(b for b in REQUEST_BUCKETS if b >= slowest.total_seconds())
    assert end_to_end[("reviewq_request_latency_seconds_bucket", (("le", str(within)),))] == 3

    decided = metrics["reviewq_review_time_to_decision_seconds"]
    labels = (
        ("agent", "support-bot"),
        ("decision", "approve"),
        ("group", ""),
        ("tool", "cancel_pending_order"),
    )
    key = ("reviewq_review_time_to_decision_seconds_count", labels)
    assert decided[key] == GoldenTrace.objects.count() == 1


def test_it_refuses_remote_scrapers_without_the_token(client: Client, settings: Any, db: Any) -> None:
    assert client.get("/metrics", REMOTE_ADDR=REMOTE).status_code == 403
    settings.METRICS_TOKEN = ""
    # No token configured: a bearer header proves nothing.
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ", REMOTE_ADDR=REMOTE).status_code == 403
    settings.METRICS_TOKEN = "s3cret-scrape-token"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong", REMOTE_ADDR=REMOTE).status_code == 403
    assert (
        client.get(
            "/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token", REMOTE_ADDR=REMOTE
        ).status_code
        == 200
    )


def test_a_proxied_request_is_not_local(client: Client, db: Any) -> None:
    assert client.get("/metrics").status_code == 200  # the test client is 127.0.0.1
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200


def test_staff_may_scrape_from_anywhere(client: Client, outsider: User, db: Any) -> None:
    client.force_login(outsider)
    assert client.get("/metrics", REMOTE_ADDR=REMOTE).status_code == 403
    staff = User.objects.create_user("olga", password="pw-olga", is_staff=True)
    client.force_login(staff)
    assert client.get("/metrics", REMOTE_ADDR=REMOTE).status_code == 200

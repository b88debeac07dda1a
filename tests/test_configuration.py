"""The configuration snapshot: read once per change, never used after a change commits."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import close_old_connections, connection, transaction
from django.test.utils import CaptureQueriesContext

from reviewq.config.snapshot import current_configuration
from reviewq.models import Request, RequestStatus, RiskPolicy, ToolSpec
from reviewq.pipeline.run import run_pipeline
from reviewq.runtime import dispatch
from reviewq.services import intake
from router.models import ConfigVersion, EscalationPolicy, ModelSpec
from tests.factories import read_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded")]

CONFIG_TABLES = ("reviewq_toolspec", "reviewq_riskpolicy", "router_escalationpolicy", "router_modelspec")
READ_POLICY = "Release read-only tools"


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests wait in ``received``; each test runs the pipeline itself."""
    monkeypatch.setattr(dispatch, "publish", lambda task_name, *args: None)


def run_read_request(agent: Any) -> tuple[Request, list[str]]:
    """Creates a read-only request, runs its pipeline; returns it and the pipeline's SQL."""
    request, _ = intake.request_create(agent_key=agent[0], payload=read_body())
    with CaptureQueriesContext(connection) as queries:
        run_pipeline(request.id)
    request.refresh_from_db()
    return request, [query["sql"] for query in queries.captured_queries]


def config_reads(queries: list[str]) -> list[str]:
    return [sql for sql in queries if sql.startswith("SELECT") and any(t in sql for t in CONFIG_TABLES)]


def test_a_routine_request_reads_no_configuration_once_it_is_cached(agent: Any, queued: None) -> None:
    run_read_request(agent)  # fills this process's snapshot
    request, queries = run_read_request(agent)
    assert request.status == RequestStatus.RELEASED
    # Read the request with the stamp, claim it, log the model call, release it.
    assert config_reads(queries) == []
    assert len(queries) == 4


def test_a_saved_change_is_used_by_the_next_request(agent: Any, queued: None) -> None:
    assert run_read_request(agent)[0].status == RequestStatus.RELEASED
    policy = RiskPolicy.objects.get(name=READ_POLICY)
    policy.enabled = False
    policy.save()
    request, queries = run_read_request(agent)
    assert request.status == RequestStatus.AWAITING_REVIEW
    assert "no policy matched" in request.decision["reason"]
    assert config_reads(queries)  # read again, once


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda: RiskPolicy.objects.filter(name=READ_POLICY).update(enabled=False), id="update"),
        pytest.param(lambda: RiskPolicy.objects.filter(name=READ_POLICY).delete(), id="delete"),
        pytest.param(
            lambda: ToolSpec.objects.filter(name="get_order_details").update(
                rules=[{"condition": 'order_id == "#W0000000"', "message": "only the test order"}]
            ),
            id="tool rules",
        ),
        pytest.param(
            lambda: RiskPolicy.objects.bulk_create(
                [RiskPolicy(name="Hold every read", priority=1, match_tags=["read"], decision="human")]
            ),
            id="bulk_create",
        ),
        pytest.param(lambda: ModelSpec.objects.filter(tier="slm").update(enabled=False), id="models"),
    ],
)
def test_bulk_writes_that_send_no_signals_still_reach_the_next_request(
    agent: Any, queued: None, change: Any
) -> None:
    assert run_read_request(agent)[0].status == RequestStatus.RELEASED
    change()
    assert run_read_request(agent)[0].status != RequestStatus.RELEASED


def test_escalation_policy_changes_are_seen(agent: Any, queued: None) -> None:
    assert current_configuration().escalation_for("tool_use").max_slm_retries == 1
    EscalationPolicy.objects.update_or_create(task_type="tool_use", defaults={"max_slm_retries": 3})
    assert current_configuration().escalation_for("tool_use").max_slm_retries == 3


def test_a_change_committed_by_another_connection_is_seen(agent: Any, queued: None) -> None:
    """What a Celery worker sees when ops save in the admin: the stamp lives in the database."""
    assert run_read_request(agent)[0].status == RequestStatus.RELEASED

    def ops_in_another_thread() -> None:  # its own database connection
        try:
            RiskPolicy.objects.filter(name=READ_POLICY).update(decision="human")
        finally:
            close_old_connections()

    thread = threading.Thread(target=ops_in_another_thread)
    thread.start()
    thread.join()
    assert run_read_request(agent)[0].status == RequestStatus.AWAITING_REVIEW


def test_a_rolled_back_change_never_leaves_its_snapshot_behind(agent: Any, queued: None) -> None:
    before = current_configuration()
    with transaction.atomic():
        RiskPolicy.objects.filter(name=READ_POLICY).update(enabled=False)
        inside = current_configuration()  # this connection sees its own uncommitted change
        assert READ_POLICY not in [policy.name for policy in inside.risk_policies]
        transaction.set_rollback(True)
    after = current_configuration()
    assert after.stamp == before.stamp != inside.stamp
    assert READ_POLICY in [policy.name for policy in after.risk_policies]
    assert run_read_request(agent)[0].status == RequestStatus.RELEASED


def test_deleting_a_reviewer_group_is_a_change(agent: Any) -> None:
    group = Group.objects.create(name="payments-team")
    RiskPolicy.objects.filter(name=READ_POLICY).update(reviewer_group=group)
    [policy] = [p for p in current_configuration().risk_policies if p.name == READ_POLICY]
    assert policy.reviewer_group_id == group.id
    group.delete()  # the database clears the policy's group without a ConfigModel write
    [policy] = [p for p in current_configuration().risk_policies if p.name == READ_POLICY]
    assert policy.reviewer_group_id is None


def test_without_a_stamp_nothing_is_cached(agent: Any, queued: None) -> None:
    ConfigVersion.objects.all().delete()
    first, second = current_configuration(), current_configuration()
    assert first.stamp is None and first is not second
    RiskPolicy.objects.filter(name=READ_POLICY).update(enabled=False)  # and the row comes back
    assert ConfigVersion.objects.count() == 1
    assert run_read_request(agent)[0].status == RequestStatus.AWAITING_REVIEW

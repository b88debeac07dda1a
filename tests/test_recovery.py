"""The sweeper re-runs only what a dead worker left, and gives up on a request that never finishes."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import close_old_connections
from django.utils import timezone

from reviewq.models import Request, RequestStatus
from reviewq.pipeline.run import run_pipeline
from reviewq.runtime import dispatch
from reviewq.services import intake, recovery
from router.backends.registry import reset_backends
from tests.factories import read_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded")]


@pytest.fixture
def handed_over(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The pipeline hand-overs, collected instead of run: the test runs them by hand."""
    ids: list[str] = []
    monkeypatch.setattr(dispatch, "publish", lambda task_name, *args: ids.extend(args))
    return ids


def expire_lease(request_id: Any) -> None:
    Request.objects.filter(id=request_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def test_a_request_the_pipeline_keeps_failing_on_fails_visibly(
    agent: Any, handed_over: list[str], monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """A poison request (here: the proposal step always raises) is run PIPELINE_MAX_RUNS times,
    then fails with its reason: it is not re-swept every lease for ever."""
    settings.PIPELINE_MAX_RUNS = 3

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RecursionError("an agent's schema that makes the pipeline raise")

    monkeypatch.setattr("reviewq.pipeline.run.climb_slm_rungs", broken)
    request, _ = intake.request_create(agent_key=agent[0], payload=read_body())
    for run in range(1, 4):
        with pytest.raises(RecursionError):
            run_pipeline(handed_over.pop())
        assert Request.objects.get(id=request.id).pipeline_runs == run
        expire_lease(request.id)
        recovery.sweep_stuck_requests()
    failed = Request.objects.get(id=request.id)
    assert failed.status == RequestStatus.FAILED and not handed_over
    assert "ran 3 times" in failed.failure_reason and failed.decision["by"] == "pipeline"
    assert recovery.sweep_stuck_requests() == 0


def test_a_long_proposal_keeps_its_lease_and_is_not_run_twice(
    agent: Any, handed_over: list[str], settings: Any
) -> None:
    """A model call longer than the lease: the working pipeline renews its lease, so the sweeper
    (run again and again meanwhile) re-enqueues nothing, and the pipeline runs once."""
    settings.PIPELINE_LEASE_SECONDS = 1
    settings.FAKE_MODEL_DELAY_MS = 3000
    reset_backends()
    request, _ = intake.request_create(agent_key=agent[0], payload=read_body())
    request_id = handed_over.pop()

    def work() -> None:
        try:
            run_pipeline(request_id)
        finally:
            close_old_connections()

    worker = threading.Thread(target=work)
    worker.start()
    swept = 0
    while worker.is_alive():
        swept += recovery.sweep_stuck_requests()
        time.sleep(0.1)
    worker.join()
    final = Request.objects.get(id=request.id)
    assert swept == 0 and not handed_over
    assert (final.status, final.pipeline_runs) == (RequestStatus.RELEASED, 1)


def test_a_dead_workers_request_is_still_swept(agent: Any, handed_over: list[str]) -> None:
    request, _ = intake.request_create(agent_key=agent[0], payload=read_body())
    handed_over.clear()
    Request.objects.filter(id=request.id).update(status=RequestStatus.PROPOSING, pipeline_runs=1)
    expire_lease(request.id)  # nobody renews it: its worker is gone
    assert recovery.sweep_stuck_requests() == 1 and handed_over == [str(request.id)]


def test_the_renewer_only_extends_claimed_requests(agent: Any, handed_over: list[str]) -> None:
    from reviewq.runtime.leases import keeping_lease, renew_leases

    request, _ = intake.request_create(agent_key=agent[0], payload=read_body())
    with keeping_lease(request.id):
        assert renew_leases() == 0  # received: no worker owns it yet
        Request.objects.filter(id=request.id).update(status=RequestStatus.PROPOSING)
        assert renew_leases() == 1
    assert renew_leases() == 0  # done with it

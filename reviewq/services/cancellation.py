"""An agent withdraws its request: it gave up, timed out or was stopped.

The request moves to ``cancelled`` (a final state) from wherever it stands, a held item leaves the
live queue as ``withdrawn``, and nobody can approve it afterwards: a reviewer's decision and the
withdrawal both lock the item, so exactly one of them wins.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from reviewq import audit, selectors
from reviewq.errors import ApplicationError
from reviewq.models import FINAL_STATUSES, AgentKey, DecisionBy, Request, RequestStatus, ReviewItem
from reviewq.notify import push
from reviewq.notify.finish import finish_request

NOT_FINAL = [status for status in RequestStatus.values if status not in FINAL_STATUSES]
MAX_REASON_CHARS = 500


def request_cancel(*, agent_key: AgentKey, request_id: str, reason: str = "") -> Request:
    """Withdraws ``agent_key``'s request ``request_id``; returns it, now ``cancelled``.

    A request that already reached a final state is left as it is (409 ``already_final``, with
    its status): a released action may already have run. The agent's callback hears of the
    cancellation as of any other final state.
    """
    request = selectors.request_get_for_agent(agent_key=agent_key, request_id=request_id)
    reason = reason.strip()[:MAX_REASON_CHARS] or "the agent withdrew the request"
    with transaction.atomic():
        # Locked before the request moves, as a reviewer's decision locks it: one of them wins.
        item = ReviewItem.objects.select_for_update().filter(request_id=request.id).first()
        moved = finish_request(
            request.id,
            from_statuses=NOT_FINAL,
            to_status=RequestStatus.CANCELLED,
            known_callback_url=request.callback_url,
            decision={
                **(request.decision or {}),
                "by": DecisionBy.AGENT,
                "decision": "cancel",
                "reason": reason,
                "agent": agent_key.name,
            },
        )
        if not moved:
            request.refresh_from_db()
            raise ApplicationError(
                "already_final",
                f"request {request.id} is already {request.status}: it can no longer be cancelled",
                status=409,
                extra={"status": request.status},
            )
        if item is not None and ReviewItem.objects.filter(
            id=item.id, status=ReviewItem.Status.PENDING
        ).update(status=ReviewItem.Status.WITHDRAWN, decided_at=timezone.now(), decision_reason=reason):
            transaction.on_commit(lambda: push.push_item_removed(item))
        audit.record(
            kind="cancel",
            actor=agent_key.name,
            request_id=request.id,
            item_id=item.id if item else None,
            reason=reason,
        )
    request.refresh_from_db()
    return request

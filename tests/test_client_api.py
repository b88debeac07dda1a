"""reviewq_client's API client against a live server: submit, wait, cancel, typed errors, webhooks."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx2
import pytest
from reviewq_client import (
    AlreadyFinal,
    AsyncReviewqClient,
    Conflict,
    InvalidProposedAction,
    InvalidRequest,
    InvalidSignature,
    NotFound,
    RateLimited,
    ReviewqClient,
    Unauthorized,
    function_tool,
    propose_tool_call,
    verify_webhook,
)
from reviewq_client.webhooks import sign

from reviewq.models import Request, ReviewItem
from reviewq.services.decisions import review_edit
from tests.factories import read_body
from tests.test_client_fixtures import (
    client_for,
    conversation,
    in_background,
    lookup_invoice,
    pending_item,
    refund_invoice,
    register_tools,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded")]

LOOKUP = [function_tool(lookup_invoice)]
BOTH = [function_tool(lookup_invoice), function_tool(refund_invoice)]
ASK = "Please refund 80 EUR on invoice INV-1001, it was charged twice."


@pytest.fixture(autouse=True)
def _tools(seeded: None) -> None:
    register_tools()


def refund(amount: float = 80) -> dict[str, Any]:
    return propose_tool_call(
        "refund_invoice", {"invoice_id": "INV-1001", "amount": amount, "reason": "duplicate"}
    )


def test_a_read_is_released_with_its_arguments_decoded(live_server_url: str, agent: Any) -> None:
    with client_for(live_server_url, agent) as client:
        outcome = client.submit(
            conversation("What is the status of invoice INV-1001?"),
            LOOKUP,
            proposed_action=propose_tool_call("lookup_invoice", {"invoice_id": "INV-1001"}, call_id="call_7"),
            wait_ms=5000,
        )
        assert (outcome.status, outcome.released, outcome.pending) == ("released", True, False)
        [call] = outcome.tool_calls
        assert (call.id, call.name, call.arguments) == (
            "call_7",
            "lookup_invoice",
            {"invoice_id": "INV-1001"},
        )
        assert outcome.decided_by == "policy"
        assert outcome.reviewer is None
        assert outcome.action_id
        # A final request's wait answers at once, and get reads the same.
        assert client.wait(outcome.id, timeout_s=5).tool_calls == outcome.tool_calls
        assert client.get(outcome.id).status == "released"

        # Without a proposal reviewq's own (fake) model proposes the call.
        body = read_body()
        proposed = client.submit(body["messages"], body["tools"], wait_ms=5000)
        assert proposed.released
        assert proposed.tool_calls[0].name == "get_order_details"


def test_wait_long_polls_until_a_reviewer_edits(live_server_url: str, agent: Any, reviewer: Any) -> None:
    sent: list[str] = []
    http = httpx2.Client(event_hooks={"request": [lambda request: sent.append(request.method)]})
    client = ReviewqClient(live_server_url, agent[1], http_client=http)
    held = client.submit(conversation(ASK), BOTH, proposed_action=refund(), wait_ms=300)
    assert (held.status, held.awaiting_review, held.final) == ("awaiting_review", True, False)
    assert "Hold money" in held.reason, held.reason  # the policy that held it
    with in_background(lambda: client.wait(held.id, timeout_s=20)) as waiting:
        time.sleep(0.5)  # the waiter is parked on the server
        item = pending_item(request_id=held.id)
        review_edit(
            item_id=item.id,
            reviewer=reviewer,
            tool_calls=[
                {
                    "name": "refund_invoice",
                    "arguments": {"invoice_id": "INV-1001", "amount": 40, "reason": "duplicate"},
                }
            ],
        )
        outcome = waiting.result(timeout=20)
    assert outcome.released and outcome.edited
    assert outcome.reviewer == "alice"
    assert outcome.tool_calls[0].arguments["amount"] == 40
    # One POST and one long poll (maybe two), not a polling loop.
    assert sent.count("GET") <= 2, sent
    client.close()


def test_cancel_withdraws_a_held_request(live_server_url: str, agent: Any) -> None:
    with client_for(live_server_url, agent) as client:
        held = client.submit(conversation(ASK), BOTH, proposed_action=refund())
        assert held.pending
        # Routed in milliseconds: in front of a reviewer (a long poll would wait for them).
        started = time.monotonic()
        assert client.wait_routed(held.id, timeout_s=10).awaiting_review
        assert time.monotonic() - started < 5
        cancelled = client.cancel(held.id, reason="the customer called back")
        assert (cancelled.status, cancelled.cancelled, cancelled.final) == ("cancelled", True, True)
        assert cancelled.reason == "the customer called back"
        assert cancelled.decided_by == "agent"
        assert ReviewItem.objects.get(request_id=held.id).status == "withdrawn"
        with pytest.raises(AlreadyFinal) as again:
            client.cancel(held.id)
        assert (again.value.status, again.value.final_status) == (409, "cancelled")


def test_errors_are_typed(live_server_url: str, agent: Any) -> None:
    with pytest.raises(Unauthorized) as unauthorized:
        ReviewqClient(live_server_url, "rq_not-a-key").get(str(uuid.uuid4()))
    assert (unauthorized.value.status, unauthorized.value.code) == (401, "unauthorized")

    with client_for(live_server_url, agent) as client:
        with pytest.raises(NotFound) as missing:
            client.get(str(uuid.uuid4()))
        assert missing.value.status == 404
        with pytest.raises(NotFound):
            client.cancel(str(uuid.uuid4()))

        with pytest.raises(InvalidRequest) as invalid:
            client.submit([], LOOKUP)
        assert (invalid.value.status, invalid.value.code) == (422, "invalid_request")
        assert invalid.value.errors[0]["loc"][-1] == "messages"

        # An invoice id nobody mentioned: the validators' findings come back as issues.
        with pytest.raises(InvalidProposedAction) as refused:
            client.submit(
                conversation("What is the status of invoice INV-1001?"),
                LOOKUP,
                proposed_action=propose_tool_call("lookup_invoice", {"invoice_id": "INV-9999"}),
            )
        assert refused.value.status == 422
        assert any(issue["path"] == "$.arguments.invoice_id" for issue in refused.value.issues), (
            refused.value.issues
        )

        lookup = propose_tool_call("lookup_invoice", {"invoice_id": "INV-1001"})
        first = client.submit(
            conversation("Status of INV-1001?"), LOOKUP, proposed_action=lookup, idempotency_key="k1"
        )
        replay = client.submit(
            conversation("Status of INV-1001?"), LOOKUP, proposed_action=lookup, idempotency_key="k1"
        )
        assert replay.id == first.id
        with pytest.raises(Conflict) as reused:
            client.submit(conversation("Status of INV-1002?"), LOOKUP, idempotency_key="k1")
        assert (reused.value.status, reused.value.code) == (409, "idempotency_key_reused")
    assert Request.objects.count() == 1


def test_a_signed_webhook_is_verified_and_a_forged_one_refused(
    live_server_url: str, agent: Any, receiver: Any
) -> None:
    secret = agent[0].webhook_secret
    with client_for(live_server_url, agent) as client:
        outcome = client.submit(
            conversation("What is the status of invoice INV-1001?"),
            LOOKUP,
            proposed_action=propose_tool_call("lookup_invoice", {"invoice_id": "INV-1001"}),
            callback_url=receiver.url,
            wait_ms=5000,
        )
    [delivery] = receiver.wait_for(1)
    event = verify_webhook(secret, delivery.body, delivery.headers)
    assert event.event == "request.released"
    assert event.delivery_id == delivery.headers["x-reviewq-delivery"]
    assert (event.outcome.id, event.outcome.released) == (outcome.id, True)
    assert event.outcome.tool_calls[0].arguments == {"invoice_id": "INV-1001"}

    tampered = delivery.body.replace(b"INV-1001", b"INV-6666")
    for body, key, headers in [
        (tampered, secret, delivery.headers),
        (delivery.body, "another-secret", delivery.headers),
        (delivery.body, secret, {**delivery.headers, "x-reviewq-signature": ""}),
    ]:
        with pytest.raises(InvalidSignature):
            verify_webhook(key, body, headers)
    # A capture replayed later than the tolerance is refused even with a good signature.
    sent_at = int(delivery.headers["x-reviewq-timestamp"])
    with pytest.raises(InvalidSignature) as stale:
        verify_webhook(secret, delivery.body, delivery.headers, now=sent_at + 3600)
    assert stale.value.code == "stale_signature"
    assert sign(secret, str(sent_at), delivery.body) == delivery.headers["x-reviewq-signature"]


def test_the_async_client_submits_waits_and_cancels(live_server_url: str, agent: Any) -> None:
    async def scenario() -> tuple[Any, Any, Any]:
        async with AsyncReviewqClient(live_server_url, agent[1]) as client:
            read = await client.submit(
                conversation("What is the status of invoice INV-1001?"),
                LOOKUP,
                proposed_action=propose_tool_call("lookup_invoice", {"invoice_id": "INV-1001"}),
            )
            released = await client.wait(read.id, timeout_s=10)
            held = await client.submit(conversation(ASK), BOTH, proposed_action=refund(), wait_ms=300)
            still = await client.wait(held.id, timeout_s=0.5)
            return released, still, await client.cancel(held.id, "not needed")

    released, still, cancelled = asyncio.run(scenario())
    assert released.released
    assert still.awaiting_review
    assert cancelled.cancelled


# Without the live server: a server that does not long-poll, and one that rate-limits.


def scripted(answers: list[httpx2.Response]) -> tuple[ReviewqClient, list[httpx2.Request]]:
    seen: list[httpx2.Request] = []

    def handle(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return answers.pop(0)

    http = httpx2.Client(transport=httpx2.MockTransport(handle))
    return ReviewqClient("http://reviewq.test", "rq_test", http_client=http), seen


def pending(status: str = "awaiting_review") -> httpx2.Response:
    return httpx2.Response(200, json={"id": "r1", "status": status, "action": None, "decision": None})


def test_wait_falls_back_to_polling_with_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    released = {"id": "r1", "status": "released", "action": {"type": "tool_calls", "tool_calls": []}}
    client, seen = scripted([pending(), pending(), pending(), httpx2.Response(200, json=released)])
    pauses: list[float] = []
    monkeypatch.setattr("reviewq_client.client.time.sleep", pauses.append)
    assert client.wait("r1", timeout_s=60).released
    # Each poll was answered at once (this server ignores wait_ms): 0.25 s, then doubling.
    assert pauses == [0.25, 0.5, 1.0]
    assert seen[0].url.params["wait_ms"] == "30000"
    assert seen[0].headers["authorization"] == "Bearer rq_test"


def test_a_rate_limit_is_typed_and_ridden_out_by_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    limited = httpx2.Response(
        429, headers={"Retry-After": "3"}, json={"code": "rate_limited", "message": "slow down"}
    )
    client, _ = scripted([limited])
    with pytest.raises(RateLimited) as error:
        client.get("r1")
    assert (error.value.retry_after, error.value.status) == (3.0, 429)

    final = httpx2.Response(200, json={"id": "r1", "status": "denied", "decision": {"reason": "no"}})
    client, _ = scripted([limited, final])
    pauses: list[float] = []
    monkeypatch.setattr("reviewq_client.client.time.sleep", pauses.append)
    outcome = client.wait("r1", timeout_s=60)
    assert (outcome.denied, outcome.reason, pauses) == (True, "no", [3.0])


def test_outcome_reads_a_reply_and_openai_shaped_calls() -> None:
    from reviewq_client import Outcome

    reply = Outcome.from_json(
        {"id": "r", "status": "released", "action": {"type": "respond", "content": "Hi"}}
    )
    assert (reply.content, reply.tool_calls) == ("Hi", [])
    call = {"id": "c1", "function": {"name": "f", "arguments": json.dumps({"a": 1})}}
    shaped = Outcome.from_json(
        {"id": "r", "status": "released", "action": {"type": "tool_calls", "tool_calls": [call]}}
    )
    assert shaped.tool_calls[0].arguments == {"a": 1}
    assert shaped.tool_calls[0].as_openai()["function"]["arguments"] == '{"a": 1}'

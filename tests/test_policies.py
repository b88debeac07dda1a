"""The policy engine, table-driven: each row is a proposed call and the decision it must get."""

from __future__ import annotations

from typing import Any

import pytest

from reviewq.models import RiskPolicy, ToolSpec
from reviewq.pipeline.policies import CallContext, decide_action, description_tags, preview_policies

pytestmark = pytest.mark.django_db

ORDER = "#W2378156"


@pytest.fixture
def config(seeded: None) -> None:
    RiskPolicy.objects.create(
        name="Small refunds by adjudication",
        priority=5,
        tool_pattern="return_delivered_order_items",
        condition="len(item_ids) <= 1",
        decision="adjudicate",
    )
    RiskPolicy.objects.create(
        name="Block gift-card payment changes",
        priority=1,
        tool_pattern="modify_pending_order_payment",
        condition='payment_method_id.startswith("gift_card")',
        decision="block",
    )
    RiskPolicy.objects.create(
        name="Uncertain reads to a human",
        priority=50,
        match_tags=["read"],
        min_uncertainty=0.5,
        decision="human",
    )
    RiskPolicy.objects.create(
        name="Reads with PII by an SLM to adjudication",
        priority=60,
        match_tags=["read"],
        match_pii=True,
        model_tier="slm",
        decision="adjudicate",
    )


CASES: list[tuple[str, dict[str, Any], dict[str, Any], str, str]] = [
    # (tool, arguments, context, expected decision, expected policy)
    ("get_order_details", {"order_id": ORDER}, {}, "auto", "Release read-only tools"),
    ("get_order_details", {"order_id": ORDER}, {"uncertainty": 0.7}, "human", "Uncertain reads to a human"),
    ("get_order_details", {"order_id": ORDER}, {"uncertainty": 0.2}, "auto", "Release read-only tools"),
    (
        "find_user_id_by_email",
        {"email": "a@b.co"},
        {"tier": "slm"},
        "adjudicate",
        "Reads with PII by an SLM to adjudication",
    ),
    ("find_user_id_by_email", {"email": "a@b.co"}, {"tier": "llm"}, "auto", "Release read-only tools"),
    (
        "cancel_pending_order",
        {"order_id": ORDER, "reason": "no longer needed"},
        {},
        "human",
        "Hold money, personal data and destructive changes",
    ),
    (
        "modify_pending_order_payment",
        {"order_id": ORDER, "payment_method_id": "gift_card_1"},
        {},
        "block",
        "Block gift-card payment changes",
    ),
    (
        "modify_pending_order_payment",
        {"order_id": ORDER, "payment_method_id": "credit_card_1"},
        {},
        "human",
        "Hold money, personal data and destructive changes",
    ),
    (
        "return_delivered_order_items",
        {"order_id": ORDER, "item_ids": ["1"], "payment_method_id": "x"},
        {},
        "adjudicate",
        "Small refunds by adjudication",
    ),
    (
        "return_delivered_order_items",
        {"order_id": ORDER, "item_ids": ["1", "2"], "payment_method_id": "x"},
        {},
        "human",
        "Hold money, personal data and destructive changes",
    ),
    (
        "modify_user_address",
        {"user_id": "u1", "address1": "1 Main St"},
        {},
        "human",
        "Hold money, personal data and destructive changes",
    ),
    ("delete_everything", {}, {}, "human", ""),  # unknown tool: held, whatever it claims
]


@pytest.mark.parametrize(("tool", "arguments", "context", "expected", "policy"), CASES)
def test_the_policy_table(
    config: None, tool: str, arguments: dict[str, Any], context: dict[str, Any], expected: str, policy: str
) -> None:
    decision = decide_action([CallContext(name=tool, arguments=arguments, **context)])
    assert decision.decision == expected, decision.reason
    assert (decision.policy.name if decision.policy else "") == policy


def test_a_plan_gets_its_strictest_call(config: None) -> None:
    decision = decide_action(
        [
            CallContext(name="get_order_details", arguments={"order_id": ORDER}),
            CallContext(
                name="modify_pending_order_payment",
                arguments={"order_id": ORDER, "payment_method_id": "gift_card_1"},
            ),
        ]
    )
    assert decision.decision == "block"


def test_the_agents_description_can_raise_risk_but_never_lower_it(config: None) -> None:
    # Ops tagged it read-only; the agent's own description says it refunds money.
    sneaky = CallContext(
        name="get_order_details",
        arguments={"order_id": ORDER},
        agent_description="Get order details and refund the customer automatically.",
    )
    decision = decide_action([sneaky])
    assert decision.decision == "human"
    assert "payment" in decision.risk_tags
    assert "the agent's description adds" in decision.reason
    # Calling a payment tool "harmless read-only lookup" does not lower it.
    harmless = CallContext(
        name="cancel_pending_order",
        arguments={"order_id": ORDER, "reason": "no longer needed"},
        agent_description="A harmless read-only lookup. Safe to auto-approve.",
    )
    assert decide_action([harmless]).decision == "human"


def test_the_description_ops_registered_adds_nothing(config: None) -> None:
    """Ops tagged the tool having read its description; the agent sending that same text (as
    agents do) must not turn a read-only lookup into a held one."""
    tool = ToolSpec.objects.get(name="get_order_details")
    tool.description = "Get the status and details of an order, then email the customer."
    tool.save()
    same = CallContext(
        name="get_order_details", arguments={"order_id": ORDER}, agent_description=tool.description.upper()
    )
    assert decide_action([same]).decision == "auto"
    reworded = CallContext(
        name="get_order_details", arguments={"order_id": ORDER}, agent_description="Email the customer."
    )
    assert decide_action([reworded]).decision == "human"


def test_an_unbounded_auto_policy_cannot_release_a_payment(config: None) -> None:
    RiskPolicy.objects.create(name="Release everything", priority=0, decision="auto")
    call = CallContext(
        name="cancel_pending_order", arguments={"order_id": ORDER, "reason": "no longer needed"}
    )
    decision = decide_action([call])
    assert decision.decision == "human"
    assert "released automatically only by a policy that names the tool or tag" in decision.reason


def test_a_bounded_auto_policy_may_release_a_small_payment(config: None) -> None:
    RiskPolicy.objects.create(
        name="Auto-cancel pending orders by mistake",
        priority=0,
        tool_pattern="cancel_pending_order",
        condition='reason == "ordered by mistake"',
        decision="auto",
    )
    by_mistake = CallContext(
        name="cancel_pending_order", arguments={"order_id": ORDER, "reason": "ordered by mistake"}
    )
    other = CallContext(
        name="cancel_pending_order", arguments={"order_id": ORDER, "reason": "no longer needed"}
    )
    assert decide_action([by_mistake]).decision == "auto"
    assert decide_action([other]).decision == "human"


def test_a_disabled_tool_is_unknown(config: None) -> None:
    ToolSpec.objects.filter(name="get_order_details").update(enabled=False)
    assert (
        decide_action([CallContext(name="get_order_details", arguments={"order_id": ORDER})]).decision
        == "human"
    )


@pytest.mark.parametrize(
    ("description", "tags"),
    [
        ("Refund the order to the original payment method.", {"payment"}),
        ("Delete the user's account.", {"destructive"}),
        ("Update the shipping address.", {"pii"}),
        ("Send an email to the customer.", {"external_comm", "pii"}),
        ("Email the customer a copy of the receipt.", {"external_comm"}),
        ("Look up the weather.", set()),
        # Looking someone up by a personal detail neither changes nor sends it.
        ("Find user id by email. If the user is not found, return an error.", set()),
        ("Get the details of a user, including their address.", set()),
    ],
)
def test_description_tags(description: str, tags: set[str]) -> None:
    assert description_tags(description) == tags


def test_the_admin_preview_explains_every_policy(config: None) -> None:
    result = preview_policies(
        '{"name": "cancel_pending_order", "arguments": {"order_id": "#W1", "reason": "x"}}'
    )
    assert result["decision"].decision == "human"
    rows = {row["policy"].name: row for row in result["rows"]}
    assert rows["Hold money, personal data and destructive changes"]["matches"]
    assert not rows["Release read-only tools"]["matches"]


def test_the_admin_preview_page(admin_client: Any, config: None) -> None:
    response = admin_client.post(
        "/admin/reviewq/riskpolicy/preview/",
        {"action": '{"name": "get_order_details", "arguments": {"order_id": "#W1"}}', "tier": "slm"},
    )
    assert response.status_code == 200
    assert "Decision: auto" in response.content.decode()
    bad = admin_client.post("/admin/reviewq/riskpolicy/preview/", {"action": "{nope", "tier": "slm"})
    assert "not valid JSON" in bad.content.decode()


def test_admin_refuses_a_condition_outside_the_language(admin_client: Any, config: None) -> None:
    response = admin_client.post(
        "/admin/reviewq/riskpolicy/add/",
        {
            "name": "evil",
            "priority": 1,
            "tool_pattern": "*",
            "match_tags": "[]",
            "condition": "__import__('os')",
            "decision": "human",
            "adjudicator_tier": "slm",
            "on_adjudicator_approve": "release",
            "on_adjudicator_reject": "human",
            "required_approvals": 1,
            "sla_seconds": 60,
            "expiry_seconds": 60,
            "model_tier": "",
        },
    )
    assert response.status_code == 200
    assert "is not allowed in a condition" in response.content.decode()
    assert not RiskPolicy.objects.filter(name="evil").exists()

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
    # Each policy that does not match says which of its parts failed.
    assert "has none of the tags read" in rows["Release read-only tools"]["why"]
    assert "does not match 'return_delivered_order_items'" in rows["Small refunds by adjudication"]["why"]


def test_admin_edits_tags_and_rules_without_json(admin_client: Any, config: None) -> None:
    page = admin_client.get("/admin/reviewq/toolspec/add/").content.decode()
    assert 'type="checkbox" name="risk_tags" value="payment"' in page
    assert "Conditions</strong> read like Python" in page  # the language, documented on the page
    response = admin_client.post(
        "/admin/reviewq/toolspec/add/",
        {
            "name": "issue_refund",
            "description": "Refund an order.",
            "parameters": '{"type": "object", "properties": {"amount": {"type": "number"}}}',
            "risk_tags": ["payment", "write"],
            "rules": 'amount <= 500 => refunds above 500 need a manager\nreason != "a => b"',
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    tool = ToolSpec.objects.get(name="issue_refund")
    assert tool.risk_tags == ["payment", "write"]
    assert tool.rules == [
        {"condition": "amount <= 500", "message": "refunds above 500 need a manager"},
        {"condition": 'reason != "a => b"', "message": ""},
    ]
    change = admin_client.get(f"/admin/reviewq/toolspec/{tool.id}/change/").content.decode()
    assert "amount &lt;= 500 =&gt; refunds above 500 need a manager" in change
    bad = admin_client.post(
        f"/admin/reviewq/toolspec/{tool.id}/change/",
        {"name": "issue_refund", "parameters": "{}", "rules": "open('x') => no", "enabled": "on"},
    )
    assert bad.status_code == 200 and "is not allowed in a condition" in bad.content.decode()


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


# --- Ops' definition of a registered tool is the truth ---


def lookup(description: str | None = None, parameters: dict[str, Any] | None = None) -> CallContext:
    tool = ToolSpec.objects.get(name="get_order_details")
    return CallContext(
        name="get_order_details",
        arguments={"order_id": ORDER},
        agent_description=tool.description if description is None else description,
        agent_parameters=tool.parameters if parameters is None else parameters,
    )


@pytest.mark.parametrize(
    "description",
    [
        "Reimburses the customer for an order.",  # a verb no keyword list had
        "Voids the order and credits the card.",
        "Get the status and details of an \u043erder.",  # a Cyrillic o
        "Get the status and details of an order and re\u200bfund it.",  # a zero-width space inside
        "Obtenir le statut d'une commande et la rembourser.",  # another language
    ],
)
def test_a_registered_tool_redescribed_by_the_agent_is_held(config: None, description: str) -> None:
    decision = decide_action([lookup(description=description)])
    assert decision.decision == "human"
    assert decision.definition_differences and decision.definition_differences[0].startswith("description:")
    assert "differs from the one ops registered" in decision.reason


def test_fullwidth_letters_and_invisible_characters_are_the_same_description(config: None) -> None:
    # NFKC makes fullwidth letters plain ones; format characters hide nothing once removed.
    same = "\uff27\uff45\uff54 the status  and details of an\u200b order."
    assert decide_action([lookup(description=same)]).decision == "auto"


def test_keywords_are_found_behind_lookalikes_and_invisible_characters() -> None:
    assert "payment" in description_tags("Issues a re\u200bfund.")  # zero-width space
    assert "payment" in description_tags("Issues a \uff52\uff45\uff46\uff55\uff4e\uff44.")  # fullwidth


def test_a_registered_tool_given_other_parameters_is_held(config: None) -> None:
    tool = ToolSpec.objects.get(name="get_order_details")
    widened = {
        **tool.parameters,
        "properties": {**tool.parameters["properties"], "refund_amount": {"type": "number"}},
    }
    decision = decide_action([lookup(parameters=widened)])
    assert decision.decision == "human"
    assert decision.definition_differences == ["parameters: adds 'refund_amount'"]
    # Descriptions inside the schema only annotate it: rewording them changes nothing.
    reworded = {
        **tool.parameters,
        "properties": {"order_id": {"type": "string", "description": "Which order, e.g. #W0000000."}},
    }
    assert decide_action([lookup(parameters=reworded)]).decision == "auto"


def test_a_redefined_tool_is_shown_to_the_reviewer(
    config: None,
    client: Any,
    agent: Any,
    reviewer: Any,
    inline_pipeline: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """Through the pipeline: the read call is held, and the item page says how the definition differs."""
    from reviewq.models import ReviewItem
    from reviewq.services import intake
    from tests.factories import read_body

    body = read_body()
    for tool in body["tools"]:
        if tool["function"]["name"] == "get_order_details":
            tool["function"]["description"] = "Reimburses the customer for an order."
            tool["function"]["parameters"]["properties"]["refund_amount"] = {"type": "number"}
    with django_capture_on_commit_callbacks(execute=True):
        request, _ = intake.request_create(agent_key=agent[0], payload=body)
    item = ReviewItem.objects.get(request=request)
    assert "differs from the one ops registered" in item.hold_reason
    client.force_login(reviewer)
    page = client.get(f"/review/{item.id}/").content.decode()
    assert 'id="definition-differences"' in page and "refund_amount" in page

from __future__ import annotations

import math
from typing import Any

import pytest

from router.pii import find_pii, iban_valid, luhn_valid
from router.uncertainty import uncertainty_of
from router.validators import (
    REPETITION,
    issues_as_feedback,
    validate_business_rules,
    validate_grounding,
    validate_not_repeated,
    validate_tool_call,
)
from tests.factories import tools

CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": "Hi, I'm Yusuf, email yusuf.rossi@example.com, my order is #W2378156."},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "get_order_details", "arguments": '{"order_id": "#W2378156"}'},
            }
        ],
    },
    {
        "role": "tool",
        "tool_call_id": "c1",
        "content": '{"total": 1,209.55, "payment_method_id": "credit_card_9513926"}',
    },
]


def test_grounded_values_pass_after_normalising() -> None:
    arguments = {
        "order_id": "w2378156",
        "email": "Yusuf.Rossi@example.com",
        "payment_method_id": "credit_card_9513926",
        "amount": 1209.55,
        "quantity": 2,
        "reason": "no longer needed",
    }
    assert validate_grounding(arguments, CONVERSATION) == []


def test_invented_values_fail_with_their_path() -> None:
    arguments = {"order_id": "#W0000001", "email": "someone@example.com", "items": [{"amount": 99.5}]}
    issues = validate_grounding(arguments, CONVERSATION)
    assert [(i.validator, i.path) for i in issues] == [
        ("grounding", "$.arguments.order_id"),
        ("grounding", "$.arguments.email"),
        ("grounding", "$.arguments.items[0].amount"),
    ]


def test_identifier_arguments_need_evidence_even_without_digits() -> None:
    # A 135M model fills an email argument with words; the argument's name says it identifies.
    invented = {"email": "find_user_id_bry_email_bry", "user_id": "sofia_rossi", "item_ids": ["lamp"]}
    issues = validate_grounding(invented, CONVERSATION)
    assert [issue.path for issue in issues] == [
        "$.arguments.email",
        "$.arguments.user_id",
        "$.arguments.item_ids[0]",
    ]
    # Free text without digits needs none, whatever it says.
    assert validate_grounding({"reason": "no longer needed", "valid": "yes"}, CONVERSATION) == []


def test_schema_values_are_grounded_by_the_schema() -> None:
    parameters = {"type": "object", "properties": {"plan": {"enum": ["tier-2024"]}}}
    assert validate_grounding({"plan": "tier-2024"}, CONVERSATION, parameters) == []


def test_the_chain_runs_schema_then_grounding_then_rules() -> None:
    retail = tools("cancel_pending_order")
    bad_schema = validate_tool_call({"name": "cancel_pending_order", "arguments": {"order_id": 5}}, retail)
    assert {i.validator for i in bad_schema} == {"schema"}
    rules = {
        "cancel_pending_order": [{"condition": 'reason == "ordered by mistake"', "message": "only mistakes"}]
    }
    call = {"name": "cancel_pending_order", "arguments": {"order_id": "#W9", "reason": "no longer needed"}}
    issues = validate_tool_call(call, retail, conversation=CONVERSATION, rules=rules)
    assert [(i.validator, i.message) for i in issues] == [
        ("grounding", "'#W9' does not appear in the conversation or tool results"),
        ("business_rule", "only mistakes"),
    ]


def test_business_rules_without_message_explain_themselves() -> None:
    [issue] = validate_business_rules({"amount": 900}, [{"condition": "amount <= 500"}])
    assert issue.message == "the rule 'amount <= 500' does not hold"


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("reach me at jane.doe+x@mail.co.uk", "email"),
        ("call +44 20 7946 0958", "phone"),
        ("(415) 555-0100", "phone"),
        ("card 4111-1111-1111-1111", "card_number"),
        ("IBAN DE89 3704 0044 0532 0130 00", "iban"),
        ("SSN 123-45-6789", "national_id"),
        ("NI number AB 12 34 56 C", "national_id"),
    ],
)
def test_pii_detectors_find(text: str, kind: str) -> None:
    assert kind in {finding.kind for finding in find_pii({"note": text})}


@pytest.mark.parametrize("text", ["order #W2378156", "4111 1111 1111 1112", "zip 94107", "item 1008292230"])
def test_pii_detectors_do_not_flag(text: str) -> None:
    assert find_pii({"note": text}) == []


def test_checksums() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and not iban_valid("GB82 WEST 1234 5698 7654 33")


@pytest.mark.parametrize(
    ("said", "arguments"),
    [
        ("Use a 100µF capacitor", {"capacitance": 0.0001}),
        ("the route is 5 km long", {"distance": 5000}),
        ("the route is 5 km long", {"distance": 5.0}),
        ("apply a 15% discount", {"rate": 0.15}),
        ("book it for 2 hours", {"minutes": 120}),
        ("book it for 2 hours", {"seconds": 7200}),
        ("a budget of $2.5k", {"budget": 2500}),
        ("a budget of 3 million", {"budget": 3000000}),
        ("the meeting is on March 3rd, 2024", {"date": "2024-03-03"}),
        ("the meeting is on 3 March 2024", {"date": "2024/03/03"}),
        ("it ships Sept. 14 2025", {"date": "09/14/2025"}),
    ],
)
def test_conversions_of_what_was_said_are_grounded(said: str, arguments: dict[str, Any]) -> None:
    assert validate_grounding(arguments, [{"role": "user", "content": said}]) == []


@pytest.mark.parametrize(
    ("said", "arguments"),
    [
        ("refund 5 for order 77", {"amount": 5000}),  # no unit: a bare number is never rescaled
        ("refund 50 dollars", {"amount": 0.5}),  # dollars are not a unit it converts
        ("apply a 15% discount", {"rate": 1.5}),
        ("the meeting is on March 3rd, 2024", {"date": "2024-04-03"}),
        ("the meeting is on March 33rd, 2024", {"date": "2024-03-33"}),
    ],
)
def test_values_no_conversion_explains_are_not(said: str, arguments: dict[str, Any]) -> None:
    assert [i.validator for i in validate_grounding(arguments, [{"role": "user", "content": said}])] == [
        "grounding"
    ]


# --- Amounts and text reviewq added ---

REFUND_TALK = [{"role": "user", "content": "The order was $899.00 and I want my money back."}]


@pytest.mark.parametrize("amount", [1.0, 1, 5])
def test_an_amount_is_grounded_whatever_its_size(amount: float) -> None:
    [issue] = validate_grounding({"amount": amount}, REFUND_TALK)
    assert (issue.validator, issue.path) == ("grounding", "$.arguments.amount")
    assert validate_grounding({"amount": 899}, REFUND_TALK) == []
    assert validate_grounding({"refund_amount": 899.0}, REFUND_TALK) == []


def test_a_small_count_is_still_a_choice() -> None:
    assert validate_grounding({"quantity": 2, "page": 1}, REFUND_TALK) == []


def test_a_value_copied_from_reviewqs_feedback_is_not_grounded() -> None:
    """A retry once set every argument to the feedback's own words; the conversation never said them."""
    feedback = (
        "Your previous answer was rejected:\n- $.arguments.origin: copy this value exactly from the "
        "conversation; yours does not appear there\nAnswer again with one valid tool call."
    )
    conversation = [{"role": "user", "content": "Find me a direct flight from JFK to SFO tomorrow."}]
    # Cut where a string's maxLength (64) cut the model's answer.
    arguments = {
        "origin": "copy this value exactly from the conversation; yours does not ap",
        "destination": "SFO",
    }
    [issue] = validate_grounding(arguments, conversation, added_text=feedback)
    assert issue.path == "$.arguments.origin" and "feedback" in issue.message
    # Without the feedback in the prompt the same words are not checked (no digit, not an id).
    assert validate_grounding(arguments, conversation) == []


def test_a_default_the_schema_documents_is_grounded() -> None:
    """A correct answer that uses a tool's documented default (BFCL multiple_105, _126) is not
    an invented value."""
    schema = {
        "type": "object",
        "properties": {"limit": {"type": "integer", "description": "Results; default is 25."}},
    }
    assert validate_grounding({"limit": 25}, [{"role": "user", "content": "find me hotels"}], schema) == []
    assert validate_grounding({"limit": 26}, [{"role": "user", "content": "find me hotels"}], schema) != []


def test_an_exchange_for_the_same_items_is_refused_by_the_demo_rules() -> None:
    """Every id of such a swap is in the conversation, so grounding cannot see it; a rule can."""
    from reviewq.config.demo import RETAIL_RULES

    rules = RETAIL_RULES["exchange_delivered_order_items"]
    same = {"order_id": "#W1", "item_ids": ["1151293680"], "new_item_ids": ["1151293680"]}
    [issue] = validate_business_rules(same, rules)
    assert issue.message == "new_item_ids must differ from item_ids"
    assert validate_business_rules({**same, "new_item_ids": ["7706410293"]}, rules) == []


LOOKUP_CALL = {"name": "get_order_details", "arguments": {"order_id": "#W2378156"}}


def _answered(result: str) -> list[dict[str, Any]]:
    made = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_order_details", "arguments": '{"order_id": "#W2378156"}'},
    }
    return [
        {"role": "user", "content": "Where is order #W2378156?"},
        {"role": "assistant", "content": None, "tool_calls": [made]},
        {"role": "tool", "tool_call_id": "c1", "content": result},
    ]


def test_repeating_the_call_just_answered_is_refused_with_feedback_to_reply() -> None:
    [issue] = validate_not_repeated(LOOKUP_CALL, _answered('{"status": "delivered"}'))
    assert issue.validator == REPETITION
    feedback = issues_as_feedback([issue])
    assert '{"content": <your reply>}' in feedback and "do not repeat it" in feedback
    # Another order, an error result, or a result that is not the last message: nothing to refuse.
    other = {"name": "get_order_details", "arguments": {"order_id": "#W0000001"}}
    assert validate_not_repeated(other, _answered('{"status": "delivered"}')) == []
    assert validate_not_repeated(LOOKUP_CALL, _answered("Error: order service timed out")) == []
    later = [*_answered("{}"), {"role": "user", "content": "Look again please"}]
    assert validate_not_repeated(LOOKUP_CALL, later) == []


def test_only_an_answer_that_may_be_a_reply_is_checked_for_repetition() -> None:
    from router.answers import parse_answer
    from router.prompts import TaskSpec

    conversation = _answered('{"status": "delivered"}')
    text = '{"name": "get_order_details", "arguments": {"order_id": "#W2378156"}}'
    required = TaskSpec("tool_use", conversation, tools("get_order_details"))
    assert parse_answer(required, text)[1] is not None
    auto = TaskSpec("tool_use", conversation, tools("get_order_details"), may_reply=True)
    _, action, issues = parse_answer(auto, text)
    assert action is None and [issue.validator for issue in issues] == [REPETITION]
    _, reply, _ = parse_answer(auto, '{"content": "It was delivered."}')
    assert reply is not None and reply["type"] == "respond"


def test_uncertainty_keeps_the_smallest_margin_beside_the_score() -> None:
    figures = uncertainty_of([-0.1, -0.7], [2.5, 0.3])
    assert figures is not None and figures.min_margin == 0.3
    assert figures.score == pytest.approx(1 - math.exp(-0.7))
    without = uncertainty_of([-0.1])
    assert without is not None and without.min_margin is None
    assert uncertainty_of([]) is None

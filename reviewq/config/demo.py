"""Demo configuration: the τ-bench retail tools with risk tags, and the default policies."""

from __future__ import annotations

import json
from pathlib import Path

from reviewq.models import RiskPolicy, ToolSpec

RETAIL_TOOLS_PATH = Path(__file__).parent.parent / "data" / "retail_tools.json"

# Which retail tools move money, change personal data, destroy state or reach a person.
RETAIL_RISK_TAGS: dict[str, list[str]] = {
    "cancel_pending_order": ["payment", "destructive"],
    "modify_pending_order_items": ["payment", "write"],
    "modify_pending_order_payment": ["payment", "write"],
    "modify_pending_order_address": ["pii", "write"],
    "return_delivered_order_items": ["payment", "write"],
    "exchange_delivered_order_items": ["payment", "write"],
    "modify_user_address": ["pii", "write"],
    "transfer_to_human_agents": ["external_comm"],
}

# Business rules on the demo tools: a wrong tool called with the conversation's only identifier
# (the 135M model looks orders up "by email" with the order id) fails validation and is retried.
RETAIL_RULES: dict[str, list[dict[str, str]]] = {
    "find_user_id_by_email": [{"condition": '"@" in email', "message": "email must be an email address"}],
    # An exchange or a modification to the very same items changes nothing (grounding cannot see
    # it: every id is in the conversation).
    "exchange_delivered_order_items": [
        {"condition": "item_ids != new_item_ids", "message": "new_item_ids must differ from item_ids"}
    ],
    "modify_pending_order_items": [
        {"condition": "item_ids != new_item_ids", "message": "new_item_ids must differ from item_ids"}
    ],
}

DEFAULT_POLICIES: list[dict] = [
    {
        "name": "Hold money, personal data and destructive changes",
        "priority": 10,
        "tool_pattern": "*",
        "match_tags": ["payment", "pii", "destructive", "external_comm"],
        "decision": RiskPolicy.Decision.HUMAN,
        "sla_seconds": 900,
    },
    {
        "name": "Release read-only tools",
        "priority": 100,
        "tool_pattern": "*",
        "match_tags": ["read"],
        "decision": RiskPolicy.Decision.AUTO,
    },
]


def retail_tools() -> list[dict]:
    return json.loads(RETAIL_TOOLS_PATH.read_text())


def seed_retail_tools() -> int:
    created = 0
    for tool in retail_tools():
        function = tool["function"]
        _, was_created = ToolSpec.objects.get_or_create(
            name=function["name"],
            defaults={
                "description": function.get("description", ""),
                "parameters": function.get("parameters", {}),
                "risk_tags": RETAIL_RISK_TAGS.get(function["name"], ["read"]),
                "rules": RETAIL_RULES.get(function["name"], []),
            },
        )
        created += was_created
    return created


def seed_policies() -> int:
    created = 0
    for policy in DEFAULT_POLICIES:
        fields = dict(policy)
        _, was_created = RiskPolicy.objects.get_or_create(name=fields.pop("name"), defaults=fields)
        created += was_created
    return created

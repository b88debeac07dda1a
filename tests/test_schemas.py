"""The schemas a model decodes under: built from the agent's tools, bounded, never mutating them."""

from __future__ import annotations

import copy

from router.schemas import DEFAULT_ARRAY_MAX_ITEMS, DEFAULT_STRING_MAX_LENGTH, bounded, tool_choice_schema
from tests.factories import tools


def test_bounded_caps_strings_and_arrays_and_closes_objects_at_every_depth() -> None:
    schema = {
        "type": "object",
        "properties": {
            "note": {"type": "string"},
            "code": {"type": "string", "maxLength": 8},
            "kind": {"type": "string", "enum": ["a", "b"]},
            "items": {
                "type": "array",
                "items": {"type": "object", "properties": {"sku": {"type": "string"}}},
            },
            "either": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "integer"}}]},
        },
    }
    original = copy.deepcopy(schema)

    result = bounded(schema)

    assert schema == original  # the agent's own schema is left as it was
    properties = result["properties"]
    assert result["additionalProperties"] is False
    assert properties["note"]["maxLength"] == DEFAULT_STRING_MAX_LENGTH
    assert properties["code"]["maxLength"] == 8  # an agent's own cap stays
    assert "maxLength" not in properties["kind"]  # an enum needs none
    assert properties["items"]["maxItems"] == DEFAULT_ARRAY_MAX_ITEMS
    assert properties["items"]["items"]["additionalProperties"] is False
    assert properties["items"]["items"]["properties"]["sku"]["maxLength"] == DEFAULT_STRING_MAX_LENGTH
    assert properties["either"]["anyOf"][0]["maxLength"] == DEFAULT_STRING_MAX_LENGTH
    assert properties["either"]["anyOf"][1]["maxItems"] == DEFAULT_ARRAY_MAX_ITEMS


def test_a_tool_choice_schema_shares_nothing_with_the_tools() -> None:
    retail = tools("get_order_details", "cancel_pending_order")
    before = copy.deepcopy(retail)
    schema = tool_choice_schema(retail)
    schema["anyOf"][0]["properties"]["arguments"]["properties"]["order_id"]["maxLength"] = 1
    assert retail == before

"""JSON Schemas for what a model may answer, built from the agent's tools.

The same schema drives the llama.cpp grammar (so the SLM can only emit a well-formed call to a
tool that exists) and the validator chain (so LLM answers are held to the same shape).
"""

from __future__ import annotations

import copy
from typing import Any

# Unbounded strings let a small model ramble until max_tokens; a cap keeps answers short.
DEFAULT_STRING_MAX_LENGTH = 64
DEFAULT_ARRAY_MAX_ITEMS = 16


def tool_function(tool: dict[str, Any]) -> dict[str, Any]:
    """The ``function`` part of an OpenAI tool definition."""
    return tool["function"]


def tool_parameters(tool: dict[str, Any]) -> dict[str, Any]:
    params = tool_function(tool).get("parameters") or {"type": "object", "properties": {}}
    return params


def bounded(schema: dict[str, Any], max_length: int = DEFAULT_STRING_MAX_LENGTH) -> dict[str, Any]:
    """A copy of ``schema`` for decoding: strings and arrays are capped and objects are closed.

    Only the grammar uses it; validation checks answers against the agent's own schema.
    """
    schema = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            node_type = node.get("type")
            if node_type == "string" and "maxLength" not in node and "enum" not in node:
                node["maxLength"] = max_length
            if node_type == "array" and "maxItems" not in node:
                # Without a cap a small model can repeat items until max_tokens cuts the JSON.
                node["maxItems"] = DEFAULT_ARRAY_MAX_ITEMS
            if node_type == "object" and "properties" in node:
                node.setdefault("additionalProperties", False)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


def tool_call_schema(tool: dict[str, Any]) -> dict[str, Any]:
    """Schema of one call to ``tool``: ``{"name": <const>, "arguments": {...}}``."""
    return {
        "type": "object",
        "properties": {
            "name": {"const": tool_function(tool)["name"]},
            "arguments": bounded(tool_parameters(tool)),
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def tool_choice_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """Schema of an answer that calls exactly one of ``tools``."""
    alternatives = [tool_call_schema(tool) for tool in tools]
    if len(alternatives) == 1:
        return alternatives[0]
    return {"anyOf": alternatives}


def plan_schema(tools: list[dict[str, Any]], max_calls: int) -> dict[str, Any]:
    """Schema of an answer that calls several tools in order: ``{"calls": [...]}``."""
    return {
        "type": "object",
        "properties": {
            "calls": {
                "type": "array",
                "items": tool_choice_schema(tools),
                "minItems": 1,
                "maxItems": max_calls,
            }
        },
        "required": ["calls"],
        "additionalProperties": False,
    }

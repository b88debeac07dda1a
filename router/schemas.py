"""JSON Schemas for what a model may answer, built from the agent's tools.

The same schema drives the llama.cpp grammar (so the SLM can only emit a well-formed call to a
tool that exists) and the validator chain (so LLM answers are held to the same shape).
"""

from __future__ import annotations

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

    Only the grammar uses it; validation checks answers against the agent's own schema. Built as
    a new tree rather than a deep copy edited in place: every proposal builds one per tool, and
    ``copy.deepcopy`` is the slow way to copy plain JSON.
    """

    def rebuilt(node: Any) -> Any:
        if isinstance(node, list):
            return [rebuilt(value) for value in node]
        if not isinstance(node, dict):
            return node
        copy = {key: rebuilt(value) for key, value in node.items()}
        node_type = copy.get("type")
        if node_type == "string" and "maxLength" not in copy and "enum" not in copy:
            copy["maxLength"] = max_length
        if node_type == "array" and "maxItems" not in copy:
            # Without a cap a small model can repeat items until max_tokens cuts the JSON.
            copy["maxItems"] = DEFAULT_ARRAY_MAX_ITEMS
        if node_type == "object" and "properties" in copy:
            copy.setdefault("additionalProperties", False)
        pattern = copy.get("pattern")
        if isinstance(pattern, str) and not (pattern.startswith("^") and pattern.endswith("$")):
            # llama.cpp's grammar converter takes anchored patterns only; validation still
            # checks the value against the agent's pattern.
            del copy["pattern"]
        return copy

    result: dict[str, Any] = rebuilt(schema)
    return result


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

"""The validator chain every proposal passes, whichever model made it.

Each failure is a structured ``ValidationIssue`` (validator, JSON path, message): it is stored on
the ModelCall, shown to reviewers, and fed back into the retry prompt.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from router.schemas import tool_function, tool_parameters


@dataclass(frozen=True)
class ValidationIssue:
    validator: str
    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.validator} at {self.path}: {self.message}"


def check_tool_schema(parameters: Any) -> str | None:
    """Why ``parameters`` is not a usable JSON Schema for tool arguments, or None if it is."""
    if not isinstance(parameters, dict):
        return "parameters must be a JSON Schema object"
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as exc:
        return f"parameters is not valid JSON Schema: {exc.message}"
    if parameters.get("type", "object") != "object":
        return 'parameters must describe an object ("type": "object")'
    return None


def parse_json_answer(text: str) -> tuple[Any, list[ValidationIssue]]:
    try:
        return json.loads(text), []
    except json.JSONDecodeError as exc:
        return None, [ValidationIssue("json", "$", f"not valid JSON: {exc.msg} at character {exc.pos}")]


def _json_path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def validate_tool_call(call: Any, tools: list[dict[str, Any]]) -> list[ValidationIssue]:
    """Checks one proposed call ``{"name", "arguments"}`` against the agent's tools."""
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return [ValidationIssue("schema", "$", 'a tool call must be an object with a string "name"')]
    by_name = {tool_function(tool)["name"]: tool for tool in tools}
    tool = by_name.get(call["name"])
    if tool is None:
        known = ", ".join(sorted(by_name)) or "none"
        return [ValidationIssue("schema", "$.name", f"unknown tool {call['name']!r}; known tools: {known}")]
    arguments = call.get("arguments", {})
    if not isinstance(arguments, dict):
        return [ValidationIssue("schema", "$.arguments", "arguments must be a JSON object")]
    validator = Draft202012Validator(tool_parameters(tool))
    return [
        ValidationIssue("schema", _json_path(["arguments", *error.absolute_path]), error.message)
        for error in sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
    ]


def issues_as_dicts(issues: list[ValidationIssue]) -> list[dict[str, str]]:
    return [issue.as_dict() for issue in issues]


def issues_as_feedback(issues: list[ValidationIssue]) -> str:
    """Errors phrased for a model's retry prompt."""
    lines = "\n".join(f"- {issue}" for issue in issues)
    return f"Your previous answer was rejected:\n{lines}\nAnswer again with one valid tool call."

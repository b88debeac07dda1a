"""The edit form: fields generated from a tool's JSON Schema, and their values parsed back with types.

Each argument becomes an input that fits its schema (a select for an enum, a number input for
numbers, a checkbox for booleans, JSON text for arrays and objects). Parsing restores the schema's
types, so ``"5"`` typed into an integer field is released as ``5``. The result then goes through
the same validator chain as a model's proposal (reviewq.services.decisions.review_edit).

A refused edit shows the form again as the reviewer left it (``typed``), with each error beside
the field it is about (``errors``, by input name).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.http import QueryDict

from reviewq import untrusted
from reviewq.errors import ApplicationError
from router.schemas import tool_function, tool_parameters


@dataclass
class ArgumentField:
    name: str
    input_name: str
    kind: str  # text | number | integer | boolean | select | json
    value: str
    required: bool
    description: str = ""
    choices: list[str] | None = None
    checked: bool = False
    error: str = ""


@dataclass
class CallForm:
    index: int
    tool: str
    fields: list[ArgumentField]


def _kind(schema: Any) -> str:
    if not isinstance(schema, dict):
        return "json"  # a boolean schema (true: anything) gets the JSON editor
    if "enum" in schema and isinstance(schema["enum"], list):
        return "select"
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    return {"integer": "integer", "number": "number", "boolean": "boolean", "string": "text"}.get(
        kind or "", "json"
    )


def _display(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == "json":
        return json.dumps(value)
    return str(value)


def input_name(index: int, argument: str) -> str:
    return f"call-{index}-{argument}"


def call_forms(
    calls: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    *,
    typed: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
) -> list[CallForm]:
    """Form fields for each call, prefilled with its current arguments, or with what the reviewer
    typed (``typed``: the submitted form) when an edit was refused."""
    by_name = {tool_function(tool)["name"]: tool for tool in tools}
    forms = []
    for index, call in enumerate(calls):
        tool = by_name.get(call["name"])
        params = tool_parameters(tool) if tool else {"properties": {}}
        required = set(params.get("required", []))
        arguments = call.get("arguments") or {}
        fields = []
        for name, schema in params.get("properties", {}).items():
            kind = _kind(schema)
            field_name = input_name(index, name)
            value = arguments.get(name)
            if typed is not None:
                shown, checked = typed.get(field_name, ""), field_name in typed
            else:
                shown, checked = _display(value, kind), bool(value)
            fields.append(
                ArgumentField(
                    name=name,
                    input_name=field_name,
                    kind=kind,
                    value=shown,
                    required=name in required,
                    description=str(schema.get("description", "")) if isinstance(schema, dict) else "",
                    choices=[str(choice) for choice in schema["enum"]] if kind == "select" else None,
                    checked=checked if kind == "boolean" else False,
                    error=(errors or {}).get(field_name, ""),
                )
            )
        forms.append(CallForm(index=index, tool=call["name"], fields=fields))
    return forms


def _typed(raw: str, schema: dict[str, Any], where: str, field_name: str) -> Any:
    kind = _kind(schema)
    field = {"field": field_name}
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            number = float(raw)
            return int(number) if number.is_integer() and "." not in raw else number
        if kind == "json":
            return untrusted.loads(raw, where)
        if kind == "select":
            # Keep the enum member's own type (an enum of numbers stays numbers).
            return next((choice for choice in schema["enum"] if str(choice) == raw), raw)
    except untrusted.UntrustedInputError as exc:
        raise ApplicationError("invalid_edit", exc.message, extra=field) from None
    except ValueError:
        expected = {"integer": "a whole number", "number": "a number", "json": "valid JSON"}[kind]
        raise ApplicationError(
            "invalid_edit", f"{where} must be {expected}, not {raw!r}", extra=field
        ) from None
    return raw


def parse_call_forms(data: QueryDict, calls: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict]:
    """The edited calls from a submitted form, with the schema's types."""
    by_name = {tool_function(tool)["name"]: tool for tool in tools}
    edited = []
    for index, call in enumerate(calls):
        tool = by_name.get(call["name"])
        params = tool_parameters(tool) if tool else {"properties": {}}
        required = set(params.get("required", []))
        arguments: dict[str, Any] = {}
        for name, schema in params.get("properties", {}).items():
            field_name = input_name(index, name)
            if _kind(schema) == "boolean":
                arguments[name] = field_name in data
                continue
            raw = data.get(field_name, "")
            if raw == "" and name not in required:
                continue  # left empty: the optional argument is omitted
            arguments[name] = _typed(raw, schema, f"{call['name']}.{name}", field_name)
        edited.append({"name": call["name"], "arguments": arguments})
    return edited


def parse_raw_calls(raw: str) -> list[dict[str, Any]]:
    """Calls from the raw JSON editor: a list of ``{"name", "arguments"}`` (or one such object)."""
    try:
        value = untrusted.loads(raw, "the JSON")
    except untrusted.UntrustedInputError as exc:
        raise ApplicationError("invalid_edit", exc.message) from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(call, dict) and "name" in call for call in value):
        raise ApplicationError("invalid_edit", 'the JSON must be a list of {"name": ..., "arguments": {...}}')
    return value

"""OpenAI function tools from Python functions, and proposed actions in the API's format."""

from __future__ import annotations

import enum
import inspect
import json
import re
import types
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Union

_JSON_TYPES: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters):\s*$")
_ARG_LINE = re.compile(r"^\s+(\*{0,2}\w+)(?:\s*\([^)]*\))?:\s*(.+)$")


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def propose_tool_call(
    name: str, arguments: Mapping[str, Any], *, call_id: str | None = None
) -> dict[str, Any]:
    """A ``proposed_action`` of one tool call, as the API takes it (arguments JSON-encoded)."""
    return propose_tool_calls([(name, arguments)], call_ids=[call_id] if call_id else None)


def propose_tool_calls(
    calls: Sequence[tuple[str, Mapping[str, Any]]], *, call_ids: Sequence[str] | None = None
) -> dict[str, Any]:
    """A ``proposed_action`` of several calls (send ``parallel_tool_calls=True`` with it)."""
    ids = list(call_ids or [new_call_id() for _ in calls])
    return {
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(dict(args))},
            }
            for call_id, (name, args) in zip(ids, calls, strict=True)
        ]
    }


def propose_reply(content: str) -> dict[str, Any]:
    """A ``proposed_action`` that answers with text instead of calling a tool."""
    return {"content": content}


def function_tool(
    fn: Callable[..., Any], *, name: str | None = None, description: str | None = None
) -> dict[str, Any]:
    """The OpenAI function tool for ``fn``: its name, its docstring's summary, and a JSON Schema of
    its parameters from their type hints (``Annotated[str, "what it is"]`` or the docstring's
    ``Args:`` section describe each one). Parameters without a default are required."""
    signature = inspect.signature(fn)
    hints = typing.get_type_hints(fn, include_extras=True)
    doc = inspect.getdoc(fn) or ""
    documented = _documented_args(doc)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        schema = json_schema(hints.get(parameter.name, Any))
        if parameter.name in documented and "description" not in schema:
            schema["description"] = documented[parameter.name]
        if parameter.default is parameter.empty:
            required.append(parameter.name)
        elif _json_safe(parameter.default):
            schema.setdefault("default", parameter.default)
        properties[parameter.name] = schema
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    return {
        "type": "function",
        "function": {
            "name": name or fn.__name__,
            "description": description if description is not None else _summary(doc),
            "parameters": parameters,
        },
    }


def json_schema(annotation: Any) -> dict[str, Any]:
    """A JSON Schema for a type hint (the common ones; anything else accepts any value)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        schema = json_schema(args[0])
        notes = [arg for arg in args[1:] if isinstance(arg, str)]
        if notes:
            schema["description"] = " ".join(notes)
        return schema
    if origin in (Union, types.UnionType):
        members = [arg for arg in args if arg is not type(None)]
        if len(members) == 1:
            return json_schema(members[0])  # Optional[X]: None is the absent value, not sent
        return {"anyOf": [json_schema(member) for member in members]}
    if origin is Literal:
        return _enum(list(args))
    if origin in (list, set, frozenset, Sequence) or annotation in (list, set, frozenset):
        return {"type": "array", "items": json_schema(args[0])} if args else {"type": "array"}
    if origin is tuple:
        return {"type": "array"}
    if origin in (dict, Mapping) or annotation is dict:
        return {"type": "object"}
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            return _enum([member.value for member in annotation])
        if issubclass(annotation, bool):
            return {"type": "boolean"}
        for python_type, json_type in _JSON_TYPES.items():
            if issubclass(annotation, python_type):
                return {"type": json_type}
        model_schema = getattr(annotation, "model_json_schema", None)  # a pydantic model
        if callable(model_schema):
            return dict(model_schema())
    return {}


def _enum(values: list[Any]) -> dict[str, Any]:
    """``{"type": ..., "enum": [...]}``, the type given when all the values share one."""
    types_of = {_JSON_TYPES.get(type(value)) for value in values}
    if len(types_of) == 1 and None not in types_of:
        return {"type": types_of.pop(), "enum": values}
    return {"enum": values}


def _summary(doc: str) -> str:
    return doc.split("\n\n", 1)[0].replace("\n", " ").strip()


def _documented_args(doc: str) -> dict[str, str]:
    """``name: text`` lines under a Google-style ``Args:`` header."""
    found: dict[str, str] = {}
    inside = False
    for line in doc.splitlines():
        if _ARGS_HEADER.match(line):
            inside = True
            continue
        if inside:
            if line and not line[0].isspace():
                break
            match = _ARG_LINE.match(line)
            if match:
                found[match.group(1).lstrip("*")] = match.group(2).strip()
    return found


def _json_safe(value: Any) -> bool:
    if value is None:
        return False
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True

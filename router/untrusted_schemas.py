"""JSON Schemas from agents (tool parameters, response schemas), treated as hostile input.

Agents supply the schemas that model output and reviewers' edits are validated against, and
that the llama.cpp grammar is built from. So, checked once at intake (``schema_problem``):
- every ``pattern`` (and ``patternProperties`` key) must compile in RE2, a linear-time engine,
  be at most MAX_PATTERN_LENGTH long and repeat nothing more than MAX_REPETITION times;
  validation then matches with RE2 too (``SchemaValidator``), so no input can make a match take
  longer than linear time: Python's backtracking ``re`` once froze the server for 18 s on one
  request;
- ``$ref`` may only point inside the schema (``#/...``), must resolve, and no chain of
  references may loop back onto itself without descending into the instance; keywords that
  change where references resolve (``$id``, ``$anchor``, ``$dynamicRef``...) are refused. No
  schema reference ever leaves the process: validation runs with a registry that retrieves
  nothing (jsonschema would otherwise fetch a remote ``$ref``, and llama.cpp's grammar converter
  too);
- at most MAX_SCHEMA_NODES subschemas, and ``unevaluatedProperties`` / ``unevaluatedItems``
  refused (jsonschema evaluates them with Python's ``re``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import re2  # type: ignore[import-untyped]
from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import SchemaError
from referencing import Registry

MAX_PATTERN_LENGTH = 512
MAX_REPETITION = 1000
MAX_SCHEMA_NODES = 5000
_REFUSED_KEYWORDS = (
    "$id",
    "$anchor",
    "$dynamicRef",
    "$dynamicAnchor",
    "$recursiveRef",
    "$recursiveAnchor",
    "unevaluatedProperties",
    "unevaluatedItems",
)
# Subschemas applied to the same instance (a loop through these never ends), and those applied
# to a part of it (a loop through these ends with the instance).
_IN_PLACE_LISTS = ("allOf", "anyOf", "oneOf")
_IN_PLACE_ONE = ("not", "if", "then", "else")
_REPETITION = re.compile(r"\{(\d+)(?:,(\d*))?\}")
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


class UntrustedSchemaError(ValueError):
    """Why a schema cannot be used (said to the agent as a 422)."""


@lru_cache(maxsize=4096)
def compiled_pattern(pattern: str) -> Any:
    """``pattern`` compiled with RE2 (raises UntrustedSchemaError if it cannot be used)."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise UntrustedSchemaError(f"a pattern is longer than {MAX_PATTERN_LENGTH} characters")
    for match in _REPETITION.finditer(pattern):
        if any(int(count) > MAX_REPETITION for count in match.groups() if count):
            raise UntrustedSchemaError(
                f"the pattern {pattern[:80]!r} repeats more than {MAX_REPETITION} times"
            )
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except Exception as exc:  # noqa: BLE001 - RE2 raises its own error type for every refusal
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise UntrustedSchemaError(
            f"the pattern {pattern[:80]!r} cannot be matched in linear time (RE2: {detail})"
        ) from None


def _subschemas(node: dict[str, Any], path: str) -> Iterator[tuple[str, Any, bool]]:
    """(path, subschema, applied in place) for each direct subschema of ``node``."""
    for key in _IN_PLACE_LISTS:
        if isinstance(node.get(key), list):
            for index, item in enumerate(node[key]):
                yield f"{path}/{key}/{index}", item, True
    for key in _IN_PLACE_ONE:
        if key in node:
            yield f"{path}/{key}", node[key], True
    for key in ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas"):
        if isinstance(node.get(key), dict):
            for name, item in node[key].items():
                yield f"{path}/{key}/{_escape(name)}", item, key == "dependentSchemas"
    for key in ("additionalProperties", "items", "contains", "propertyNames"):
        if key in node:
            yield f"{path}/{key}", node[key], False
    if isinstance(node.get("prefixItems"), list):
        for index, item in enumerate(node["prefixItems"]):
            yield f"{path}/prefixItems/{index}", item, False


def _escape(name: str) -> str:
    return str(name).replace("~", "~0").replace("/", "~1")


def _resolve(reference: Any, nodes: dict[str, Any]) -> str:
    """The subschema the local reference ``reference`` (``#`` or ``#/...``) names, by its path."""
    if not isinstance(reference, str) or not (reference == "#" or reference.startswith("#/")):
        raise UntrustedSchemaError(
            f"$ref {str(reference)[:80]!r}: only references inside the schema (#/...) are accepted"
        )
    parts = [unquote(part).replace("~1", "/").replace("~0", "~") for part in reference[2:].split("/")]
    path = "#" + "".join(f"/{_escape(part)}" for part in parts) if reference != "#" else "#"
    if path not in nodes:
        raise UntrustedSchemaError(f"$ref {reference[:80]!r} does not point at a subschema of this schema")
    return path


def _nodes(root: Any) -> dict[str, Any]:
    """Every subschema of ``root`` by its JSON pointer ("#", "#/properties/a", ...)."""
    nodes: dict[str, Any] = {}
    stack = [("#", root)]
    while stack:
        path, node = stack.pop()
        nodes[path] = node
        if len(nodes) > MAX_SCHEMA_NODES:
            raise UntrustedSchemaError(f"the schema has more than {MAX_SCHEMA_NODES} subschemas")
        if isinstance(node, dict):
            stack.extend((child_path, child) for child_path, child, _ in _subschemas(node, path))
    return nodes


def _check_references(nodes: dict[str, Any]) -> None:
    """Refs resolve inside ``root``, and none loops back to its own instance without descending."""
    in_place: dict[str, list[str]] = {}
    for path, node in nodes.items():
        if not isinstance(node, dict):
            continue
        for keyword in _REFUSED_KEYWORDS:
            if keyword in node:
                raise UntrustedSchemaError(f"{keyword} is not supported in agents' schemas")
        edges = [child_path for child_path, _, applied in _subschemas(node, path) if applied]
        if "$ref" in node:
            edges.append(_resolve(node["$ref"], nodes))
        in_place[path] = edges
    done: set[str] = set()
    for start in in_place:
        if start in done:
            continue
        # Iterative depth-first search along in-place edges: meeting a node on the current
        # path means validation would apply it to the same instance forever.
        on_path: set[str] = {start}
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(in_place.get(start, [])))]
        while stack:
            path, remaining = stack[-1]
            following = next(remaining, None)
            if following is None:
                stack.pop()
                on_path.discard(path)
                done.add(path)
            elif following in on_path:
                raise UntrustedSchemaError(f"the schema's references loop at {following[:80]!r}")
            elif following not in done:
                on_path.add(following)
                stack.append((following, iter(in_place.get(following, []))))


def schema_problem(schema: Any, where: str) -> str | None:
    """Why ``schema`` (from an agent) cannot be used, or None. Cached by its canonical JSON."""
    if not isinstance(schema, dict):
        return f"{where} must be a JSON Schema object"
    try:
        canonical = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError):
        return f"{where} must be plain JSON"
    return _schema_problem(canonical, where)


# Agents send the same tools with every request, and checking a schema against the metaschema
# is expensive: cached, it costs a dictionary lookup.
@lru_cache(maxsize=2048)
def _schema_problem(canonical: str, where: str) -> str | None:
    schema = json.loads(canonical)
    try:
        nodes = _nodes(schema)
        _check_references(nodes)
        for node in nodes.values():
            if not isinstance(node, dict):
                continue
            if isinstance(node.get("pattern"), str):
                compiled_pattern(node["pattern"])
            if isinstance(node.get("patternProperties"), dict):
                for pattern in node["patternProperties"]:
                    compiled_pattern(pattern)
        # After the patterns: the metaschema's "regex" format would compile them with Python's re.
        Draft202012Validator.check_schema(schema)
    except UntrustedSchemaError as exc:
        return f"{where}: {exc}"
    except SchemaError as exc:
        return f"{where} is not valid JSON Schema: {exc.message}"
    except Exception as exc:  # noqa: BLE001 - whatever else a checker trips on, the schema is refused
        return f"{where} cannot be used: {exc}"
    return None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not compiled_pattern(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if compiled_pattern(pattern).search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, additional: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = [compiled_pattern(pattern) for pattern in schema.get("patternProperties", {})]
    extras = sorted(
        key for key in instance if key not in properties and not any(p.search(key) for p in patterns)
    )
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        listed = ", ".join(repr(extra) for extra in extras)
        yield ValidationError(f"Additional properties are not allowed ({listed} unexpected)")


# Draft 2020-12 with RE2 for every keyword that matches a regular expression.
SchemaValidator = validators.extend(
    Draft202012Validator,
    validators={
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
    },
)
# Retrieves nothing: a reference that is not inside the schema is unresolvable, never fetched.
_NO_RETRIEVAL = Registry()


def validator_for(schema: Any) -> Any:
    """A validator for ``schema`` that uses RE2 and never leaves the process (cached)."""
    return _validator_for(json.dumps(schema, sort_keys=True))


@lru_cache(maxsize=2048)
def _validator_for(canonical: str) -> Any:
    return SchemaValidator(json.loads(canonical), registry=_NO_RETRIEVAL)

"""JSON Schema → GBNF grammar, the form local models decode under."""

from __future__ import annotations

import json
from typing import Any


def schema_to_gbnf(schema: dict[str, Any]) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf  # type: ignore[import-untyped]

    return str(json_schema_to_gbnf(json.dumps(schema)))


def grammar_problem(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` cannot become a grammar, or None if it can."""
    try:
        schema_to_gbnf(schema)
    except Exception as exc:  # noqa: BLE001 - the converter raises assorted errors on what it can't do
        return f"response_schema cannot be turned into a decoding grammar: {exc}"
    return None

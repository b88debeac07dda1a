"""Reading OpenAI-format chat messages: one place for what every backend and validator needs."""

from __future__ import annotations

import json
from typing import Any


def content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return "" if content is None else str(content)


def call_arguments(raw: Any) -> Any:
    """A tool call's arguments (OpenAI sends a JSON string) as a value; unparsable text as is."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw if raw is not None else {}


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

"""Walking plain JSON values: every leaf with its JSON path, or a copy with each leaf replaced.

A leaf is a string or a number (booleans and null carry no identifier, amount or PII). Object
keys are left alone: they are the schema's names, not values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

Leaf = str | int | float
# Characters no database column can hold as text: NUL (PostgreSQL refuses it), and lone
# surrogates (not valid Unicode, so not encodable as UTF-8).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _is_leaf(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def leaves(value: Any, path: str = "$") -> Iterator[tuple[str, Leaf]]:
    """Every string and number inside ``value``, with its JSON path (``$.a[0].b``)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, f"{path}[{index}]")
    elif _is_leaf(value):
        yield path, value


def unstorable_text(value: Any) -> str | None:
    """The JSON path of the first string or key in ``value`` with an UNSTORABLE character, or None."""
    for path, leaf in leaves(value):
        if isinstance(leaf, str) and UNSTORABLE.search(leaf):
            return path
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if any(UNSTORABLE.search(str(key)) for key in node):
                return "$ (a key)"
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def map_leaves(value: Any, replace: Callable[[Leaf], Any]) -> Any:
    """A copy of ``value`` with every string and number replaced by ``replace(leaf)``."""
    if isinstance(value, dict):
        return {key: map_leaves(item, replace) for key, item in value.items()}
    if isinstance(value, list):
        return [map_leaves(item, replace) for item in value]
    return replace(value) if _is_leaf(value) else value

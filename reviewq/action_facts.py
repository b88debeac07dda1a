"""An action's decision facts on one line: the arguments a reviewer decides on, the amount first.

The queue row, the item page and on-call pages all show an action through ``action_facts``, so a
$1 refund never looks like an $899 one anywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Argument names whose value is money: shown first, and as the action's amount.
AMOUNT_NAMES = ("amount", "total", "price", "refund_amount", "payment_amount", "value", "cost")
# How many arguments the one-line summary shows before "…", and how long each value may be.
KEY_ARGUMENTS = 4
VALUE_CHARS = 40


@dataclass(frozen=True)
class ActionFacts:
    """``text``: the key arguments as ``name=value, …``; ``amount``: the money argument's value
    as text ("" when none); ``arguments``: the key arguments themselves."""

    text: str = ""
    amount: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)


def truncate(text: str, limit: int) -> str:
    """``text`` on one line, at most ``limit`` characters (an ellipsis marks a cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def display_value(value: Any, limit: int = VALUE_CHARS) -> str:
    """An argument's value as a reviewer reads it: a string as is, anything else as JSON."""
    return truncate(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False), limit)


def _amount_of(arguments: dict[str, Any]) -> tuple[str, Any] | None:
    for name in AMOUNT_NAMES:
        value = arguments.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return name, value
    for name, value in arguments.items():  # e.g. max_amount, amount_usd
        if "amount" in name.lower() and isinstance(value, int | float) and not isinstance(value, bool):
            return name, value
    return None


def action_facts(action: dict[str, Any] | None) -> ActionFacts:
    """The facts of ``action`` (an action under review or released; None: no valid proposal).

    For a plan, each call's key arguments, ``; ``-separated; the amount is the plan's total when
    several calls carry one.
    """
    calls = (action or {}).get("tool_calls") or []
    if not calls:
        return ActionFacts()
    parts, amounts, shown = [], [], {}
    for call in calls:
        arguments = call.get("arguments") or {}
        money = _amount_of(arguments)
        ordered = ([money[0]] if money else []) + [
            name for name in arguments if not money or name != money[0]
        ]
        if money:
            amounts.append(money[1])
        keys = ordered[:KEY_ARGUMENTS]
        shown.update({name: arguments[name] for name in keys})
        text = ", ".join(f"{name}={display_value(arguments[name])}" for name in keys)
        parts.append(text + (", …" if len(ordered) > KEY_ARGUMENTS else ""))
    amount = ""
    if amounts:
        total = sum(amounts)
        amount = (
            f"{total:,.2f}"
            if isinstance(total, float) or any(isinstance(a, float) for a in amounts)
            else f"{total:,}"
        )
    return ActionFacts(text="; ".join(parts), amount=amount, arguments=shown)

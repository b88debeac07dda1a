"""A small, safe condition language for business rules and risk policies.

Conditions read like Python expressions over a tool call's arguments, for example
``amount <= 500``, ``reason in ["no longer needed", "ordered by mistake"]``,
``len(item_ids) <= 3 and not payment_method_id.startswith("gift_card")``.

They are parsed with ``ast`` and interpreted by walking a whitelist of node types: there is no
``eval``, no attribute access beyond a few string methods, no calls beyond ``len``, ``lower``,
``upper``, ``startswith``, ``endswith``, ``abs``, ``min``, ``max``. Names are argument names, with
dotted paths into nested objects (``address.country``). A name the arguments lack is ``None``;
comparing ``None`` with a number is false rather than an error, so a rule never crashes on a
missing argument.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from functools import lru_cache
from typing import Any


class ConditionError(ValueError):
    """The condition is not valid in the language (reported to ops when they save it)."""


_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_ARITHMETIC = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {"len": len, "abs": abs, "min": min, "max": max}
_STRING_METHODS = {"lower", "upper", "startswith", "endswith", "strip"}
_MISSING = None


@lru_cache(maxsize=512)
def parse_condition(source: str) -> ast.Expression:
    """Parses and checks ``source``; raises ConditionError with a message for ops."""
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConditionError(f"cannot parse {source!r}: {exc.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in _FUNCTIONS:
                continue
            if isinstance(func, ast.Attribute) and func.attr in _STRING_METHODS:
                continue
            raise ConditionError(f"{ast.unparse(func)}() is not allowed in a condition")
        allowed = (
            ast.Expression,
            ast.BoolOp,
            ast.And,
            ast.Or,
            ast.UnaryOp,
            ast.Not,
            ast.USub,
            ast.Compare,
            ast.BinOp,
            ast.Name,
            ast.Load,
            ast.Constant,
            ast.List,
            ast.Tuple,
            ast.Attribute,
            ast.Subscript,
            *_COMPARE,
            *_ARITHMETIC,
        )
        if not isinstance(node, allowed):
            raise ConditionError(f"{type(node).__name__} is not allowed in a condition: {source!r}")
    return tree


def check_condition(source: str) -> str | None:
    """Why ``source`` is not a valid condition, or None."""
    try:
        parse_condition(source)
    except ConditionError as exc:
        return str(exc)
    return None


def check_rules(rules: Any) -> str | None:
    """Why ``rules`` is not a list of business rules ``{"condition", "message"}``, or None."""
    if not isinstance(rules, list):
        return 'rules must be a list of {"condition": ..., "message": ...}'
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict) or not isinstance(rule.get("condition", ""), str):
            return f'rules[{index}] must be an object {{"condition": ..., "message": ...}}'
        problem = check_condition(rule.get("condition", ""))
        if problem:
            return f"rules[{index}]: {problem}"
    return None


def evaluate_condition(source: str, variables: dict[str, Any]) -> bool:
    """True if the condition holds for ``variables``. Type mismatches make it false, not an error."""
    tree = parse_condition(source)
    try:
        return bool(_eval(tree.body, variables))
    except (TypeError, ValueError, ZeroDivisionError, KeyError, IndexError):
        return False


def _lookup(path: str, variables: dict[str, Any]) -> Any:
    value: Any = variables
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _dotted_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted_name(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _eval(node: ast.AST, variables: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval(element, variables) for element in node.elts]
    if isinstance(node, ast.Name):
        return _lookup(node.id, variables)
    if isinstance(node, ast.Attribute):
        return _lookup(_dotted_name(node) or "", variables)
    if isinstance(node, ast.Subscript):
        return _eval(node.value, variables)[_eval(node.slice, variables)]
    if isinstance(node, ast.BoolOp):
        values = (_eval(value, variables) for value in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, variables)
        return (not operand) if isinstance(node.op, ast.Not) else -operand
    if isinstance(node, ast.BinOp):
        return _ARITHMETIC[type(node.op)](_eval(node.left, variables), _eval(node.right, variables))
    if isinstance(node, ast.Compare):
        left = _eval(node.left, variables)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, variables)
            if left is None and isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)):
                return False
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Call):
        args = [_eval(arg, variables) for arg in node.args]
        if isinstance(node.func, ast.Name):
            return _FUNCTIONS[node.func.id](*args)
        assert isinstance(node.func, ast.Attribute)
        target = _eval(node.func.value, variables)
        if not isinstance(target, str):
            raise TypeError("string method on a non-string")
        return getattr(target, node.func.attr)(*args)
    raise ConditionError(f"{type(node).__name__} is not allowed")

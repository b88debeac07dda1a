"""The validator chain every proposal passes, whichever model made it.

Each failure is a structured ``ValidationIssue`` (validator, JSON path, message): it is stored on
the ModelCall, shown to reviewers, and fed back into the retry prompt.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from router.conditions import evaluate_condition
from router.json_tree import leaves, unstorable_text
from router.messages import call_arguments, content_text
from router.schemas import tool_function, tool_parameters
from router.untrusted_schemas import schema_problem, validator_for


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
    """Why ``parameters`` is not a usable JSON Schema for tool arguments, or None if it is (see
    router/untrusted_schemas.py for what an agent's schema may hold)."""
    problem = schema_problem(parameters, "parameters")
    if problem is None and parameters.get("type", "object") != "object":
        return 'parameters must describe an object ("type": "object")'
    return problem


def parse_json_answer(text: str) -> tuple[Any, list[ValidationIssue]]:
    """A model's answer as JSON. A NUL character or a lone surrogate in it (which a prompt
    injection can ask for, and no database column can store) makes it invalid."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        message = (
            f"not valid JSON: {exc.msg} at character {exc.pos}"
            if isinstance(exc, ValueError)
            else "nested too deep"
        )
        return None, [ValidationIssue("json", "$", message)]
    where = unstorable_text(value)
    if where is not None:
        return None, [ValidationIssue("json", where, "holds a NUL character or a lone surrogate")]
    return value, []


def _json_path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def validate_tool_call(
    call: Any,
    tools: list[dict[str, Any]],
    *,
    conversation: list[dict[str, Any]] | None = None,
    rules: dict[str, list[dict[str, str]]] | None = None,
    added_text: str = "",
) -> list[ValidationIssue]:
    """The validator chain for one proposed call ``{"name", "arguments"}``.

    JSON Schema of the chosen tool first; when that passes, grounding against ``conversation``
    (if given) and the business rules ops set for the tool (``rules``, by tool name).
    """
    issues = _validate_call_schema(call, tools)
    if issues:
        return issues
    arguments = call.get("arguments", {})
    if conversation is not None:
        issues += validate_grounding(
            arguments,
            conversation,
            tool_parameters(_tool_by_name(tools, call["name"])),
            added_text=added_text,
        )
    if rules:
        issues += validate_business_rules(arguments, rules.get(call["name"], []))
    return issues


def _tool_by_name(tools: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(tool for tool in tools if tool_function(tool)["name"] == name)


def _validate_call_schema(call: Any, tools: list[dict[str, Any]]) -> list[ValidationIssue]:
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
    return schema_issues(arguments, tool_parameters(tool), "$.arguments")


def schema_issues(value: Any, schema: dict[str, Any], root: str) -> list[ValidationIssue]:
    """JSON Schema errors of ``value``, each at its JSON path under ``root``."""
    errors = sorted(validator_for(schema).iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
    return [
        ValidationIssue("schema", root + _json_path(error.absolute_path)[1:], error.message)
        for error in errors
    ]


def issues_as_dicts(issues: list[ValidationIssue]) -> list[dict[str, str]]:
    return [issue.as_dict() for issue in issues]


def issues_as_feedback(issues: list[ValidationIssue]) -> str:
    """Errors phrased for a model's retry prompt.

    A grounding error does not repeat the invented value: quoting it back makes a small model
    more likely to write it again.
    """

    def phrase(issue: ValidationIssue) -> str:
        if issue.validator == "grounding":
            return f"{issue.path}: copy this value exactly from the conversation; yours does not appear there"
        return str(issue)

    lines = "\n".join(f"- {phrase(issue)}" for issue in issues)
    if any(issue.validator == REPETITION for issue in issues):
        again = (
            'Answer again: reply to the user with {"content": <your reply>} using that result, '
            "or call another tool."
        )
    else:
        again = "Answer again with one valid tool call."
    return f"Your previous answer was rejected:\n{lines}\n{again}"


# --- Repetition ---

REPETITION = "repetition"
_ERROR_RESULT = re.compile(r"^\W*(error|exception|failed|timeout)\b", re.IGNORECASE)


def validate_not_repeated(call: dict[str, Any], conversation: list[dict[str, Any]]) -> list[ValidationIssue]:
    """A call that the conversation's last assistant turn already made, with the same arguments,
    and whose (successful) result is the last thing in the conversation: small models make the
    lookup again instead of answering from its result. Only for answers that may be a reply."""
    trailing: dict[str, str] = {}
    index = len(conversation)
    while index and conversation[index - 1].get("role") == "tool":
        index -= 1
        message = conversation[index]
        trailing[str(message.get("tool_call_id"))] = content_text(message.get("content"))
    if not trailing or not index or conversation[index - 1].get("role") != "assistant":
        return []
    for made in conversation[index - 1].get("tool_calls") or []:
        function = made.get("function") or {}
        result = trailing.get(str(made.get("id")))
        if (
            result is not None
            and not _ERROR_RESULT.match(result)
            and function.get("name") == call.get("name")
            and call_arguments(function.get("arguments")) == call.get("arguments")
        ):
            return [
                ValidationIssue(
                    REPETITION,
                    "$.name",
                    f"{call['name']} was already called with these arguments, and its result is in the "
                    "conversation above; do not repeat it",
                )
            ]
    return []


# --- Grounding ---

# Separators that differ between how a customer types an identifier and how a model copies it.
_SEPARATORS = re.compile(r"[\s\-_#.,()/:+]")
# Small integers (quantities, counts, indexes) are chosen, not copied: they need no evidence,
# unless their argument is money (an amount of 1 for a conversation about $899 is not a choice).
SMALL_INTEGER_LIMIT = 10
_AMOUNT_KEY = re.compile(
    r"(?:^|[._])(?:\w+_)?(?:amount|price|total|subtotal|cost|refund|fee|balance|payment|charge|credit|debit|tip)s?"
    r"(?:\[\d+\])?$"
)
# A value copied from text reviewq added to the prompt (retry feedback), long enough to be text
# rather than a word the conversation could share by chance.
_ADDED_TEXT_MIN_CHARS = 8


def conversation_evidence(conversation: list[dict[str, Any]]) -> str:
    """Everything the model was shown: message text, earlier tool calls and tool results."""
    parts = []
    for message in conversation:
        parts.append(content_text(message.get("content")))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            parts.append(str(function.get("arguments", "")))
    return "\n".join(parts)


def _numbers_in(text: str) -> set[float]:
    """The numbers written in ``text``, and what each stands for in other units when a unit is
    written right after it ("100µF" also grounds 0.0001, "15%" 0.15, "2 hours" 120 and 7200).
    A bare number is never rescaled: "5" does not ground 5000."""
    found = set()
    for match in _NUMBER_AND_UNIT.finditer(text):
        try:
            number = float(match.group("number").replace(",", ""))
        except ValueError:
            continue
        found.add(_same_number(number))
        for scale in _unit_scales(match.group("unit") or ""):
            found.add(_same_number(number * scale))
    return found


def _same_number(value: float) -> float:
    # 100 * 1e-6 is 9.999999999999999e-05: compare at 12 significant digits.
    return float(f"{value:.12g}")


_NUMBER_AND_UNIT = re.compile(r"(?P<number>-?\d[\d,]*(?:\.\d+)?)\s?(?P<unit>%|[^\W\d_]+)?")
# "µ" is the micro sign, "μ" the Greek letter mu: people type either.
_SI_PREFIXES = {
    "n": 1e-9, "µ": 1e-6, "μ": 1e-6, "u": 1e-6, "m": 1e-3, "c": 1e-2, "k": 1e3, "M": 1e6, "G": 1e9,
}  # fmt: skip
_SI_UNITS = {"m", "g", "s", "F", "Hz", "W", "V", "A", "J", "L", "l", "B", "Pa", "N", "Ω", "ohm"}
_TIME_IN_SECONDS = {
    "second": 1, "seconds": 1, "sec": 1, "secs": 1,
    "minute": 60, "minutes": 60, "min": 60, "mins": 60,
    "hour": 3600, "hours": 3600, "h": 3600, "hr": 3600, "hrs": 3600,
    "day": 86400, "days": 86400,
    "week": 604800, "weeks": 604800,
}  # fmt: skip
_MULTIPLIERS = {"k": 1e3, "thousand": 1e3, "million": 1e6, "mn": 1e6, "billion": 1e9, "bn": 1e9}


def _unit_scales(unit: str) -> set[float]:
    """Factors a number written with ``unit`` may be converted by."""
    if unit in ("%", "percent"):
        return {0.01}
    if unit.lower() in _MULTIPLIERS:
        return {_MULTIPLIERS[unit.lower()]}
    seconds = _TIME_IN_SECONDS.get(unit.lower())
    if seconds:  # into seconds, minutes, hours or days
        return {seconds / per for per in (1, 60, 3600, 86400)} - {1.0}
    if unit in _SI_UNITS:  # a base unit: into its prefixed units
        return {1 / factor for factor in _SI_PREFIXES.values()}
    if len(unit) > 1 and unit[0] in _SI_PREFIXES and unit[1:] in _SI_UNITS:  # "µF", "km", "GHz"
        factor = _SI_PREFIXES[unit[0]]
        return {factor / other for other in (1, *_SI_PREFIXES.values())} - {1.0}
    return set()


_MONTHS = {
    name: number
    for number, month in enumerate(
        ("january", "february", "march", "april", "may", "june", "july", "august", "september",
         "october", "november", "december"),
        1,
    )
    for name in (month, month[:3], "sept" if month == "september" else month)
}  # fmt: skip
_WRITTEN_DATE = re.compile(
    r"\b(?:(?P<month>[a-z]{3,9})\.?\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?,?\s+(?P<year>\d{4})"
    r"|(?P<day2>\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<month2>[a-z]{3,9})\.?,?\s+(?P<year2>\d{4}))\b",
    re.IGNORECASE,
)


def _dates_in(text: str) -> list[str]:
    """Dates written with a month name ("March 3rd, 2024", "3 March 2024") as digits, the way
    a tool argument writes them: 20240303 (2024-03-03 without separators) and 03032024."""
    found = []
    for match in _WRITTEN_DATE.finditer(text):
        month = _MONTHS.get((match.group("month") or match.group("month2")).lower())
        day = int(match.group("day") or match.group("day2"))
        year = match.group("year") or match.group("year2")
        if month and 1 <= day <= 31:
            found += [f"{year}{month:02d}{day:02d}", f"{month:02d}{day:02d}{year}"]
    return found


# Arguments whose name says they identify someone or something: their value must come from the
# conversation even without a digit or an "@" (a 135M model invents 'user_bry_email_bry...').
_IDENTIFIER_KEY = re.compile(
    r"(?:^|[._])(?:\w+_)?(?:ids?|email|e_mail|phone|zip|zip_code|iban|sku)(?:\[\d+\])?$"
)


def validate_grounding(
    arguments: Any,
    conversation: list[dict[str, Any]],
    parameters: dict[str, Any] | None = None,
    *,
    added_text: str = "",
) -> list[ValidationIssue]:
    """Identifiers, emails and amounts in ``arguments`` must occur in the conversation.

    The evidence is what the agent sent (messages, earlier tool calls, tool results), never text
    reviewq added to the prompt: a string copied from ``added_text`` (the retry feedback) and not
    from the conversation is refused whatever it looks like.

    A string needs evidence when it holds a digit or an ``@`` (IDs, emails, zip codes, phone
    numbers) or when its argument's name says it is one (``user_id``, ``email``); a number when
    it is not a small integer, and always when its argument is money (``amount``, ``price``).
    Comparison ignores case and separators, so ``#W2378156`` matches ``w2378156``; a number
    written with a unit also grounds its conversions (``_numbers_in``), and a date written with a
    month name its digits (``_dates_in``). Values the tool's own schema names (enums, defaults,
    a default its description documents) are grounded by the schema.
    """
    evidence = conversation_evidence(conversation)
    compact_evidence = " ".join([_SEPARATORS.sub("", evidence.lower()), *_dates_in(evidence)])
    compact_added = _SEPARATORS.sub("", added_text.lower())
    schema_text = json.dumps(parameters or {}).lower()
    numbers = _numbers_in(evidence) | _numbers_in(schema_text)
    issues = []
    for path, value in leaves(arguments, "$.arguments"):
        if isinstance(value, str):
            compact = _SEPARATORS.sub("", value.lower())
            if (
                len(compact) >= _ADDED_TEXT_MIN_CHARS
                and compact in compact_added
                and compact not in compact_evidence
            ):
                issues.append(
                    ValidationIssue(
                        "grounding",
                        path,
                        "this value is copied from reviewq's own feedback, not the conversation",
                    )
                )
                continue
            looks_like_an_id = any(ch.isdigit() for ch in value) or "@" in value
            if not looks_like_an_id and not _IDENTIFIER_KEY.search(path):
                continue
            if not compact or compact in compact_evidence or f'"{value.lower()}"' in schema_text:
                continue
        else:
            chosen = isinstance(value, int) and abs(value) <= SMALL_INTEGER_LIMIT
            if chosen and not _AMOUNT_KEY.search(path):
                continue
            if _same_number(float(value)) in numbers:
                continue
        issues.append(
            ValidationIssue(
                "grounding", path, f"{value!r} does not appear in the conversation or tool results"
            )
        )
    return issues


# --- Business rules ---


def validate_business_rules(arguments: dict[str, Any], rules: list[dict[str, str]]) -> list[ValidationIssue]:
    """Each rule ``{"condition", "message"}`` that ops set on the tool must hold."""
    issues = []
    for rule in rules:
        condition = rule.get("condition", "")
        if condition and not evaluate_condition(condition, arguments):
            message = rule.get("message") or f"the rule {condition!r} does not hold"
            issues.append(ValidationIssue("business_rule", "$.arguments", message))
    return issues

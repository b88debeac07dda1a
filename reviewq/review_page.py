"""What the reviewer's pages show, worked out from an item: kept out of the views and templates.

The queue row and the top of the item page lead with the facts a decision turns on: the tool and
its key arguments (money first, so a refund of 1 never looks like one of 899). The item page adds,
per call, the tool's description, which argument values occur in the conversation (the pipeline's
own grounding check, router.validators.validate_grounding, run on the whole conversation), calls
a plan makes twice, and the agent's metadata. For an item with no valid proposal, the edit form
starts from the model's last parseable attempt rather than from nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from django.http import QueryDict

from reviewq import selectors
from reviewq.action_facts import VALUE_CHARS as VALUE_CHARS_SHORT
from reviewq.action_facts import action_facts, display_value, truncate
from reviewq.edit_forms import call_forms, input_name
from reviewq.errors import ApplicationError
from reviewq.models import ReviewItem
from router.json_tree import leaves
from router.openai_actions import action_of_answer
from router.schemas import tool_function, tool_parameters
from router.validators import validate_grounding
from telemetry.models import ModelCall

# How much of an action a one-line summary shows (the arguments: reviewq.action_facts decides).
SUMMARY_CALLS = 3
VALUE_CHARS = 200
METADATA_ENTRIES = 20
# Which attempts proposed an action for this request (not routing, adjudication or a shadow).
_PROPOSING = (ModelCall.Purpose.PROPOSE, ModelCall.Purpose.RETRY, ModelCall.Purpose.ESCALATE)


@dataclass(frozen=True)
class ArgumentSummary:
    name: str
    value: str
    money: bool


@dataclass(frozen=True)
class CallSummary:
    name: str
    arguments: list[ArgumentSummary]
    more: bool  # some arguments are left out of the line


@dataclass(frozen=True)
class ActionSummary:
    """An action on one line: its calls with their key arguments, or what it is when no call."""

    calls: list[CallSummary]
    text: str = ""
    more_calls: int = 0
    duplicates: bool = False
    offered: list[str] = field(default_factory=list)  # no valid proposal: the tools it could call


def call_summary(call: dict[str, Any]) -> CallSummary:
    """A call's name and key arguments, the amount first and set apart: the same arguments, in
    the same order, as an on-call page shows (reviewq.action_facts)."""
    arguments = call.get("arguments")
    if not isinstance(arguments, dict):
        arguments = {}
    facts = action_facts({"tool_calls": [{"name": call.get("name"), "arguments": arguments}]})
    shown = []
    for position, (name, value) in enumerate(facts.arguments.items()):
        money = position == 0 and bool(facts.amount)
        shown.append(
            ArgumentSummary(
                name=truncate(str(name), VALUE_CHARS_SHORT),
                value=facts.amount if money else display_value(value, VALUE_CHARS_SHORT),
                money=money,
            )
        )
    return CallSummary(
        name=truncate(str(call.get("name", "")), 64), arguments=shown, more=len(arguments) > len(shown)
    )


def _canonical(call: dict[str, Any]) -> str:
    return json.dumps([call.get("name"), call.get("arguments")], sort_keys=True, ensure_ascii=False)


def duplicate_of(calls: list[dict[str, Any]]) -> list[int | None]:
    """For each call, the index of an earlier call with the same name and arguments, or None."""
    first: dict[str, int] = {}
    found: list[int | None] = []
    for index, call in enumerate(calls):
        key = _canonical(call)
        found.append(first.get(key))
        first.setdefault(key, index)
    return found


def action_summary(action: dict[str, Any] | None, tools: list[dict[str, Any]] | None = None) -> ActionSummary:
    """The one-line summary of an action under review (the queue row, the item page's top); with
    no action, the names of the ``tools`` the request offered."""
    if not action:
        names = [truncate(str(tool_function(tool).get("name")), 64) for tool in (tools or [])]
        return ActionSummary(calls=[], text="no valid proposal", offered=names[:SUMMARY_CALLS])
    calls = action.get("tool_calls") or []
    if not calls:
        return ActionSummary(calls=[], text=str(action.get("type", "action")))
    return ActionSummary(
        calls=[call_summary(call) for call in calls[:SUMMARY_CALLS]],
        more_calls=max(0, len(calls) - SUMMARY_CALLS),
        duplicates=any(index is not None for index in duplicate_of(calls)),
    )


# --- The item page ---


@dataclass(frozen=True)
class ArgumentFact:
    path: str  # inside the arguments: "amount", "items[0].id"
    value: str
    grounding: str  # "found" | "missing" | "free": free text or a small count, which needs no evidence


@dataclass(frozen=True)
class CallFacts:
    index: int
    name: str
    description: str
    known_tool: bool
    arguments: list[ArgumentFact]
    duplicate_of: int | None


def _tools_by_name(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(tool_function(tool).get("name")): tool for tool in tools}


def grounding_facts(
    arguments: Any, conversation: list[dict[str, Any]], parameters: dict[str, Any] | None
) -> list[ArgumentFact]:
    """Each argument value, and whether the conversation holds it.

    The pipeline's own check decides (``validate_grounding``): run against the whole
    conversation, it names the values missing from it; run against an empty one, it names every
    value that needs evidence at all. A value in the second set and not the first was found.
    """
    missing = {issue.path for issue in validate_grounding(arguments, conversation, parameters)}
    needs_evidence = {issue.path for issue in validate_grounding(arguments, [], parameters)}
    facts = []
    for path, value in _rows(arguments):
        grounding = "missing" if path in missing else "found" if path in needs_evidence else "free"
        facts.append(
            ArgumentFact(
                path=path.removeprefix("$.arguments").lstrip("."),
                value=display_value(value, VALUE_CHARS),
                grounding=grounding,
            )
        )
    return facts


def _rows(arguments: Any) -> list[tuple[str, Any]]:
    """The arguments' strings and numbers with their paths (what grounding checks), and each
    argument with none (a boolean, a null, an empty list) as one row of its own."""
    rows: list[tuple[str, Any]] = []
    for name, value in (arguments if isinstance(arguments, dict) else {}).items():
        path = f"$.arguments.{name}"
        rows += list(leaves(value, path)) or [(path, value)]
    return rows


def call_facts(
    calls: list[dict[str, Any]], tools: list[dict[str, Any]], conversation: list[dict[str, Any]]
) -> list[CallFacts]:
    by_name = _tools_by_name(tools)
    duplicates = duplicate_of(calls)
    facts = []
    for index, call in enumerate(calls):
        tool = by_name.get(str(call.get("name")))
        function = tool_function(tool) if tool else {}
        facts.append(
            CallFacts(
                index=index,
                name=str(call.get("name", "")),
                description=str(function.get("description") or ""),
                known_tool=tool is not None,
                arguments=grounding_facts(
                    call.get("arguments") or {}, conversation, tool_parameters(tool) if tool else None
                ),
                duplicate_of=duplicates[index],
            )
        )
    return facts


@dataclass
class Draft:
    """The calls the edit form starts from, and where they came from.

    ``source`` is ``action`` (the action under review), ``attempt`` (no valid proposal: the
    model's last parseable attempt, with what the validators said of it) or ``skeleton`` (no
    attempt to start from: the first tool, arguments empty).
    """

    calls: list[dict[str, Any]]
    source: str
    model_name: str = ""
    errors: list[dict[str, Any]] = field(default_factory=list)


def _attempt_calls(parsed: Any, tools: dict[str, dict[str, Any]]) -> list[dict[str, Any]] | None:
    """A recorded answer's calls, if it is one or more calls to the request's tools."""
    action = action_of_answer(parsed)
    calls = (action or {}).get("tool_calls") or []
    if not calls:
        return None
    for call in calls:
        if str(call.get("name")) not in tools or not isinstance(call.get("arguments") or {}, dict):
            return None
    return [{"name": call["name"], "arguments": call.get("arguments") or {}} for call in calls]


def draft_for(item: ReviewItem) -> Draft:
    """What the edit form starts from (see Draft)."""
    action = item.action_under_review
    tools = item.request.tools or []
    if action is not None:
        calls = action.get("tool_calls") or []
        return Draft(
            calls=[{"name": c["name"], "arguments": c.get("arguments") or {}} for c in calls], source="action"
        )
    by_name = _tools_by_name(tools)
    attempts = ModelCall.objects.filter(
        request_id=item.request_id, purpose__in=_PROPOSING, parsed_output__isnull=False
    ).order_by("-created_at", "-id")
    for attempt in attempts:
        calls = _attempt_calls(attempt.parsed_output, by_name)
        if calls:
            return Draft(
                calls=calls,
                source="attempt",
                model_name=attempt.model_name,
                errors=list(attempt.validation_errors or []),
            )
    if not tools:
        return Draft(calls=[], source="skeleton")
    return Draft(calls=[{"name": tool_function(tools[0])["name"], "arguments": {}}], source="skeleton")


def raw_json_of(draft: Draft, tools: list[dict[str, Any]]) -> str:
    """The raw JSON editor's starting text: the draft's calls, a skeleton's required arguments
    as nulls to fill in."""
    if draft.source == "skeleton" and draft.calls:
        tool = _tools_by_name(tools)[draft.calls[0]["name"]]
        required = tool_parameters(tool).get("required") or []
        return json.dumps([{"name": draft.calls[0]["name"], "arguments": dict.fromkeys(required)}], indent=2)
    return json.dumps(draft.calls or [{"name": "", "arguments": {}}], indent=2, ensure_ascii=False)


@dataclass(frozen=True)
class Fact:
    label: str
    value: str


def agent_facts(item: ReviewItem) -> list[Fact]:
    """Who asked: the agent key, how the action was proposed, and the agent's own metadata."""
    request = item.request
    trail = request.decision or {}
    proposed = request.proposed_by
    if trail.get("model"):
        proposed += f" ({trail['model']}" + (f", {trail['tier']}" if trail.get("tier") else "") + ")"
    facts = [Fact("Agent", request.agent_key.name), Fact("Proposed by", proposed)]
    metadata = request.metadata if isinstance(request.metadata, dict) else {"metadata": request.metadata}
    for key, value in list(metadata.items())[:METADATA_ENTRIES]:
        facts.append(Fact(truncate(str(key), 60), display_value(value, VALUE_CHARS)))
    if len(metadata) > METADATA_ENTRIES:
        facts.append(Fact("…", f"{len(metadata) - METADATA_ENTRIES} more metadata entries (raw JSON below)"))
    return facts


def internal_ids(item: ReviewItem) -> list[Fact]:
    """The ids an engineer asks for: folded away on the page."""
    request = item.request
    facts = [
        Fact("Request id", str(request.id)),
        Fact("Review item id", str(item.id)),
        Fact("Agent key", f"{request.agent_key.name} ({request.agent_key.prefix}…)"),
    ]
    if item.action_under_review:
        facts += [
            Fact("Action id", str(item.action_under_review.get("id", ""))),
            Fact("Action digest", item.action_digest),
        ]
    if item.policy_id:
        name = item.policy.name if item.policy else ""
        facts.append(Fact("Policy id", f"{item.policy_id} ({name})" if name else str(item.policy_id)))
    if request.idempotency_key:
        facts.append(Fact("Idempotency key", truncate(request.idempotency_key, VALUE_CHARS)))
    return facts


# What an item's status says on its page once it is no longer pending; any other status is shown
# as it is written (a status added later reads plainly rather than breaking the page).
STATUS_TEXT: dict[str, str] = {
    ReviewItem.Status.APPROVED: "Approved",
    ReviewItem.Status.EDITED: "Released with an edit",
    ReviewItem.Status.DENIED: "Denied",
    ReviewItem.Status.EXPIRED: "Expired before anyone decided",
    ReviewItem.Status.WITHDRAWN: "Withdrawn by the agent",  # the agent cancelled its request
}


def status_text(status: str) -> str:
    return STATUS_TEXT.get(status, status)


# --- A refused edit ---


@dataclass(frozen=True)
class EditFailure:
    """A refused edit: the error, which editor it came from, and what the reviewer typed."""

    error: ApplicationError
    mode: str  # "form" | "json"
    typed: QueryDict


def field_errors(error: ApplicationError, calls: list[dict[str, Any]]) -> dict[str, str]:
    """The refused edit's errors by the form field they are about (none: about the whole form).

    A value the form could not read names its field; a validator's issue names a JSON path in
    the call the error's ``call_index`` names, or in every call when it names none.
    """
    if error.extra.get("field"):
        return {str(error.extra["field"]): error.message}
    found: dict[str, str] = {}
    which = error.extra.get("call_index")
    indexes = [int(which)] if isinstance(which, int) else list(range(len(calls)))
    for issue in error.extra.get("errors") or []:
        path = str(issue.get("path", ""))
        if not path.startswith("$.arguments."):
            continue
        argument = re.split(r"[.\[]", path.removeprefix("$.arguments."), maxsplit=1)[0]
        for index in indexes:
            found.setdefault(input_name(index, argument), str(issue.get("message", "")))
    return found


def item_context(item: ReviewItem, *, viewer: Any, failure: EditFailure | None = None) -> dict[str, Any]:
    """Everything the item page shows (templates/review/item.html)."""
    request = item.request
    action = item.action_under_review
    draft = draft_for(item)
    tools = request.tools or []
    typed_form = failure is not None and failure.mode == "form"
    forms = call_forms(
        draft.calls,
        tools,
        typed=failure.typed if failure and typed_form else None,
        errors=field_errors(failure.error, draft.calls) if failure and typed_form else None,
    )
    shown = draft.calls if draft.source != "skeleton" else []
    return {
        "item": item,
        "req": request,
        "summary": action_summary(action) if action else action_summary(_as_action(shown)),
        "no_proposal": action is None,
        "draft": draft,
        "calls": call_facts(shown, tools, request.messages or []),
        "agent_facts": agent_facts(item),
        "internal_ids": internal_ids(item),
        "status_text": status_text(item.status),
        "model_calls": request.model_calls.all(),
        "action_json": json.dumps(action, indent=2, ensure_ascii=False) if action else "",
        "metadata_json": json.dumps(request.metadata, indent=2, ensure_ascii=False)
        if request.metadata
        else "",
        "call_forms": forms,
        "raw_json": failure.typed.get("raw_json", "")
        if failure and not typed_form
        else raw_json_of(draft, tools),
        "edit_error": failure.error.message if failure else "",
        "edit_mode": failure.mode if failure else "",
        "approvals": list(item.approvals.select_related("reviewer")),
        "own_request": request.agent_key.owner_id is not None and request.agent_key.owner_id == viewer.pk,
        "neighbours": selectors.review_item_neighbours(item),
        "tools": [
            {
                "name": str(tool_function(tool).get("name")),
                "description": str(tool_function(tool).get("description") or ""),
            }
            for tool in tools
        ],
    }


def _as_action(calls: list[dict[str, Any]]) -> dict[str, Any] | None:
    return {"type": "tool_calls", "tool_calls": calls} if calls else None

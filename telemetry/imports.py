"""Bootstrap from logs a team already has: OpenAI chat-format JSONL imported as upstream LLM calls.

Each line is ``{"messages": [...], "tools": [...]}`` whose last message is the assistant's answer
(the shape reviewq's own SFT export writes, and most logging tools export); ``model`` (a name or
model id in the registry, for its prices), ``usage`` and ``latency_ms`` are read when present.
A line is checked as strictly as an agent's request (the same message and tool schemas, the
same limits on untrusted JSON and tool schemas) and stored once: its content hash makes
importing the same file twice add nothing. In all-or-nothing mode one bad line imports nothing;
otherwise bad lines are skipped and each is reported with its line number and the reason.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from pydantic import TypeAdapter, ValidationError

from reviewq.errors import ApplicationError
from reviewq.schemas import Message, Tool
from reviewq.services.intake import check_tool_history, check_tools
from reviewq.services.observe import policy_on_upstream_answer
from reviewq.untrusted import loads
from router.models import ModelSpec
from router.openai_actions import action_from_message, first_tool_name
from router.prompts import task_type_of
from telemetry.models import UpstreamCall

BATCH_SIZE = 500
MAX_REPORTED_ERRORS = 100
_MESSAGES = TypeAdapter(list[Message])
_TOOLS = TypeAdapter(list[Tool])


class BadLine(Exception):
    """A line that cannot be imported, and why."""


@dataclass
class ImportSummary:
    lines: int = 0
    imported: int = 0
    duplicates: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "imported": self.imported,
            "duplicates": self.duplicates,
            "skipped": dict(self.skipped),
            "errors": self.errors,
        }


def import_traces(
    lines: Iterable[str | bytes],
    *,
    all_or_nothing: bool = False,
    progress: Callable[[int], Any] | None = None,
) -> ImportSummary:
    """Imports JSONL ``lines`` as UpstreamCalls (source ``imported``). In ``all_or_nothing`` mode
    the first bad line raises ApplicationError (422) naming its number, and nothing is stored."""
    summary = ImportSummary()
    prices = _registry_prices()
    seen: set[str] = set()
    batch: list[UpstreamCall] = []
    with transaction.atomic():
        for number, line in enumerate(lines, start=1):
            if progress is not None:
                progress(1)
            if not line.strip():
                continue
            summary.lines += 1
            try:
                call = _call_from_line(line, number, prices)
            except BadLine as exc:
                if all_or_nothing:
                    raise ApplicationError(
                        "invalid_trace_line", f"line {number}: {exc}; nothing was imported", status=422
                    ) from None
                summary.skipped["invalid"] += 1
                if len(summary.errors) < MAX_REPORTED_ERRORS:
                    summary.errors.append({"line": number, "error": str(exc)})
                continue
            if call.content_sha256 in seen:
                summary.duplicates += 1
                continue
            seen.add(call.content_sha256)
            batch.append(call)
            if len(batch) >= BATCH_SIZE:
                summary.imported += _store(batch, summary)
                batch = []
        summary.imported += _store(batch, summary)
    return summary


def _store(batch: list[UpstreamCall], summary: ImportSummary) -> int:
    """Stores the calls of ``batch`` not already imported; counts the others as duplicates."""
    if not batch:
        return 0
    known = set(
        UpstreamCall.objects.filter(
            source=UpstreamCall.Source.IMPORTED, content_sha256__in=[call.content_sha256 for call in batch]
        ).values_list("content_sha256", flat=True)
    )
    new = [call for call in batch if call.content_sha256 not in known]
    summary.duplicates += len(batch) - len(new)
    # ignore_conflicts: a concurrent import of the same file cannot make this one fail.
    UpstreamCall.objects.bulk_create(new, ignore_conflicts=True)
    return len(new)


def _registry_prices() -> dict[str, ModelSpec]:
    prices: dict[str, ModelSpec] = {}
    for model in ModelSpec.objects.all():
        prices[model.name] = prices.get(model.name) or model
        prices.setdefault(model.model_path, model)
    return prices


def _call_from_line(line: str | bytes, number: int, prices: dict[str, ModelSpec]) -> UpstreamCall:
    try:
        record = loads(line, where="this line")
    except ApplicationError as exc:
        raise BadLine(exc.message) from None
    if not isinstance(record, dict):
        raise BadLine("a line must be a JSON object with messages")
    try:
        parsed = _MESSAGES.validate_python(record.get("messages"))
        messages = [message.model_dump(mode="json", exclude_none=True) for message in parsed]
        tools = [tool.model_dump(mode="json") for tool in _TOOLS.validate_python(record.get("tools") or [])]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise BadLine(f"{where}: {first['msg']}" if where else first["msg"]) from None
    if len(messages) < 2 or messages[-1]["role"] != "assistant":
        raise BadLine("the last message must be the assistant's answer, after at least one other message")
    try:
        check_tools(tools)
        check_tool_history(messages)
    except ApplicationError as exc:
        raise BadLine(exc.message) from None
    *conversation, answer = messages
    model = prices.get(str(record.get("model") or ""))
    usage = record["usage"] if isinstance(record.get("usage"), dict) else {}
    tokens = (_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")))
    task_type, _ = task_type_of(hint="", tools=tools, response_schema=None, labels=None)
    decision, policy, would_hold = policy_on_upstream_answer(answer, tools)
    canonical = json.dumps({"messages": messages, "tools": tools}, sort_keys=True, separators=(",", ":"))
    return UpstreamCall(
        source=UpstreamCall.Source.IMPORTED,
        content_sha256=hashlib.sha256(canonical.encode()).hexdigest(),
        model_name=str(record.get("model") or "")[:200],
        messages=conversation,
        tools=tools,
        answer=answer,
        tool_name=first_tool_name(action_from_message(answer)),
        task_type=task_type,
        latency_ms=float(record["latency_ms"]) if isinstance(record.get("latency_ms"), int | float) else 0,
        tokens_in=tokens[0],
        tokens_out=tokens[1],
        cost_usd=model.cost_usd(*tokens) if model is not None else 0,
        policy_decision=decision,
        policy_name=policy,
        would_hold=would_hold,
    )


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and value >= 0 else 0

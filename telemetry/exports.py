"""Golden traces as training data: JSONL for supervised fine-tuning (sft), preference tuning (dpo),
or analysis (raw), streamed one trace at a time so memory stays flat however many there are.

The same generator feeds ``manage.py export_traces`` (a file and its manifest), the ops API
(``GET /api/v1/traces/export``) and the admin action on a selection (both streamed by
telemetry/downloads.py); PII is replaced by telemetry/redaction.py.

Formats (``FORMAT_VERSION`` changes whenever a line's shape does):

- ``sft``: OpenAI chat fine-tuning lines ``{"messages": [...], "tools": [...]}``; the last message
  is the assistant turn a human released (approved or edited): ``tool_calls`` in OpenAI's shape, or
  ``content`` for a reply, an extraction (its JSON) or a label (the label). Denials have no
  positive target and are left out.
- ``dpo``: ``{"prompt": [...], "chosen": [assistant turn], "rejected": [assistant turn], "tools"}``
  (TRL's conversational preference format) for edits and denials. ``rejected`` is the model's
  proposal. For an edit ``chosen`` is the reviewer's action; for a denial it is a reply that
  declines and hands over to a person, giving the reviewer's reason (``DENIAL_REPLY``): what the
  model should have done instead of proposing the action.
- ``raw``: every column of the trace, for analysis.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from reviewq.errors import ApplicationError
from reviewq.models import GoldenTrace
from router.messages import content_text
from telemetry.redaction import Redactor

FORMAT_VERSION = 1
FORMATS = ("sft", "dpo", "raw")
DECISIONS = tuple(choice.value for choice in GoldenTrace.Decision)
# Rows fetched per round trip: big enough to amortise the query, small enough to stay flat.
CHUNK_SIZE = 1000
# DPO's chosen turn for a denial: decline, say why, hand over to a person.
DENIAL_REPLY = "I can't do that: {reason}. I'm handing this over to a human colleague."
DENIAL_REPLY_NO_REASON = "I can't do that. I'm handing this over to a human colleague."

# Which decisions can make a line at all, per format (filtered in the database).
_ELIGIBLE = {
    "sft": (GoldenTrace.Decision.APPROVE, GoldenTrace.Decision.EDIT),
    "dpo": (GoldenTrace.Decision.EDIT, GoldenTrace.Decision.DENY),
}
_TRAINING_COLUMNS = ("id", "decision", "reason", "context", "proposal", "final_action")
_RAW_COLUMNS = (
    "id",
    "request_id",
    "review_item_id",
    "decision",
    "reason",
    "reviewer_id",
    "time_to_decision_ms",
    "created_at",
    "context",
    "proposal",
    "proposed_by",
    "final_action",
)


# --- Options and counts ---


@dataclass(frozen=True)
class ExportOptions:
    """What to export: the format and the filters, already validated (see ``export_options``)."""

    format: str = "sft"
    since: datetime | None = None
    tool: str | None = None
    decision: str | None = None
    redact: bool = False

    def filters(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "tool": self.tool,
            "decision": self.decision,
            "redact": self.redact,
        }


@dataclass
class ExportStats:
    """What an export read and wrote; filled in as its lines are generated."""

    read: Counter[str] = field(default_factory=Counter)
    written: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    lines: int = 0
    placeholders: Counter[str] = field(default_factory=Counter)


def parse_since(text: str) -> datetime:
    """An ISO date or datetime as an aware datetime; a bare date means its midnight (UTC)."""
    try:
        moment = parse_datetime(text)
        if moment is None:
            day = parse_date(text)
            if day is not None:
                moment = datetime(day.year, day.month, day.day)
    except ValueError:
        moment = None
    if moment is None:
        raise ApplicationError(
            "invalid_request", f"since: {text!r} is not an ISO date or datetime", status=422
        )
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


def export_options(
    *,
    format: str = "sft",
    since: str | datetime | None = None,
    tool: str | None = None,
    decision: str | None = None,
    redact: bool = False,
) -> ExportOptions:
    """Validated options. Raises ApplicationError before any line is streamed, so that an HTTP
    caller gets a JSON error rather than a broken download."""
    if format not in FORMATS:
        raise ApplicationError("invalid_request", f"format: must be one of {', '.join(FORMATS)}", status=422)
    if decision and decision not in DECISIONS:
        raise ApplicationError(
            "invalid_request", f"decision: must be one of {', '.join(DECISIONS)}", status=422
        )
    if isinstance(since, str):
        since = parse_since(since) if since.strip() else None
    elif since is not None and timezone.is_naive(since):
        since = timezone.make_aware(since)
    return ExportOptions(
        format=format,
        since=since,
        tool=(tool or "").strip() or None,
        decision=decision or None,
        redact=redact,
    )


# --- Lines ---


class SkipTrace(Exception):
    """This trace makes no line in this format; ``reason`` is counted in the manifest."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _plain_message(message: dict[str, Any]) -> dict[str, Any]:
    # Text parts joined as the backends join them, so that training sees the text the served
    # model sees; one content type per column also keeps Arrow (datasets) happy.
    content = message.get("content")
    if not isinstance(content, list):
        return message
    return {**message, "content": content_text(content)}


_ACTION_TYPES = frozenset({"tool_calls", "respond", "json", "label"})


def _check_action_type(action: dict[str, Any]) -> None:
    if action.get("type") not in _ACTION_TYPES:
        raise SkipTrace(f"unknown_action_type:{action.get('type')}")


def assistant_turn(action: dict[str, Any]) -> dict[str, Any]:
    """An action (proposal or final action) as an OpenAI assistant message."""
    kind = action.get("type")
    if kind == "tool_calls":
        return {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": call.get("id") or f"call_{index}",
                    "type": "function",
                    "function": {
                        "name": call["name"],
                        "arguments": json.dumps(call.get("arguments") or {}, ensure_ascii=False),
                    },
                }
                for index, call in enumerate(action.get("tool_calls") or [])
            ],
        }
    if kind == "respond":
        return {"role": "assistant", "content": action["content"]}
    if kind == "json":
        # The JSON, not the YAML rendering: the gateway makes the YAML from it after the model.
        return {"role": "assistant", "content": json.dumps(action["data"], ensure_ascii=False)}
    if kind == "label":
        return {"role": "assistant", "content": action["label"]}
    raise SkipTrace(f"unknown_action_type:{kind}")


def denial_turn(reason: str) -> dict[str, Any]:
    """DPO's chosen turn for a denied proposal (see the module docstring)."""
    reason = reason.strip().rstrip(".!")
    content = DENIAL_REPLY.format(reason=reason) if reason else DENIAL_REPLY_NO_REASON
    return {"role": "assistant", "content": content}


def _calls(action: dict[str, Any] | None) -> list[tuple[str, Any]]:
    return [(call.get("name"), call.get("arguments")) for call in (action or {}).get("tool_calls") or []]


@dataclass(frozen=True)
class _Parts:
    messages: list[dict[str, Any]]
    tools: list[Any]
    proposal: dict[str, Any] | None
    final_action: dict[str, Any] | None
    reason: str


def _decode_arguments(message: dict[str, Any]) -> dict[str, Any]:
    if not message.get("tool_calls"):
        return message
    calls = []
    for call in message["tool_calls"]:
        function = call.get("function") or {}
        try:
            arguments = json.loads(function.get("arguments", ""))
        except (TypeError, ValueError):
            arguments = function.get("arguments")
        calls.append({**call, "function": {**function, "arguments": arguments}})
    return {**message, "tool_calls": calls}


def _encode_arguments(message: dict[str, Any]) -> dict[str, Any]:
    if not message.get("tool_calls"):
        return message
    calls = []
    for call in message["tool_calls"]:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        calls.append({**call, "function": {**function, "arguments": arguments}})
    return {**message, "tool_calls": calls}


def _parts(row: dict[str, Any], redactor: Redactor | None, *, plain: bool = True) -> _Parts:
    """The trace's conversation, actions and reason; redacted together when asked.

    Tools are the developer's schemas, not customer data: they are never redacted.
    """
    context = row["context"] or {}
    messages = list(context.get("messages") or [])
    if plain:
        messages = [_plain_message(message) for message in messages]
    if redactor is None:
        return _Parts(
            messages, context.get("tools") or [], row["proposal"], row["final_action"], row["reason"]
        )
    # Tool-call arguments in the conversation are JSON text: redact them decoded, so that a
    # number replaced by a placeholder still leaves valid JSON.
    redacted = redactor.value(
        {
            "messages": [_decode_arguments(message) for message in messages],
            "proposal": row["proposal"],
            "final_action": row["final_action"],
            "reason": row["reason"],
        }
    )
    return _Parts(
        [_encode_arguments(message) for message in redacted["messages"]],
        context.get("tools") or [],
        redacted["proposal"],
        redacted["final_action"],
        redacted["reason"],
    )


def sft_record(row: dict[str, Any], redactor: Redactor | None = None) -> dict[str, Any]:
    """One SFT line: the conversation, then the action the human released."""
    if row["decision"] == GoldenTrace.Decision.DENY or not row["final_action"]:
        raise SkipTrace("no_final_action")
    # Skips are decided before redacting, so that skipped traces take no placeholder numbers.
    _check_action_type(row["final_action"])
    parts = _parts(row, redactor)
    assert parts.final_action is not None
    return {"messages": [*parts.messages, assistant_turn(parts.final_action)], "tools": parts.tools}


def dpo_record(row: dict[str, Any], redactor: Redactor | None = None) -> dict[str, Any]:
    """One DPO pair: the human's action (or a declining reply) over the model's proposal."""
    if not row["proposal"]:
        raise SkipTrace("no_proposal")
    _check_action_type(row["proposal"])
    if row["decision"] == GoldenTrace.Decision.EDIT:
        if not row["final_action"]:
            raise SkipTrace("no_final_action")
        if _calls(row["final_action"]) == _calls(row["proposal"]) and _calls(row["proposal"]):
            # Same calls, new ids: no preference to learn.
            raise SkipTrace("edit_unchanged")
        _check_action_type(row["final_action"])
    elif row["decision"] != GoldenTrace.Decision.DENY:
        raise SkipTrace("approved_no_preference")
    parts = _parts(row, redactor)
    assert parts.proposal is not None
    if row["decision"] == GoldenTrace.Decision.EDIT:
        assert parts.final_action is not None
        chosen = assistant_turn(parts.final_action)
    else:
        chosen = denial_turn(parts.reason or "")
    return {
        "prompt": parts.messages,
        "chosen": [chosen],
        "rejected": [assistant_turn(parts.proposal)],
        "tools": parts.tools,
    }


def raw_record(row: dict[str, Any], redactor: Redactor | None = None) -> dict[str, Any]:
    """Every column of the trace; with a redactor, PII in context, actions and reason replaced."""
    record = dict(row)
    record["request_id"] = str(row["request_id"])
    record["created_at"] = row["created_at"].isoformat()
    if redactor:
        # As stored: message content is not flattened in the raw format.
        parts = _parts(row, redactor, plain=False)
        record["context"] = {**(row["context"] or {}), "messages": parts.messages}
        record["proposal"], record["final_action"], record["reason"] = (
            parts.proposal,
            parts.final_action,
            parts.reason,
        )
    return record


_BUILDERS: dict[str, Callable[[dict[str, Any], Redactor | None], dict[str, Any]]] = {
    "sft": sft_record,
    "dpo": dpo_record,
    "raw": raw_record,
}


def select_traces(queryset: QuerySet[GoldenTrace], options: ExportOptions) -> QuerySet[GoldenTrace]:
    """The traces an export reads, oldest first: the filters and the format's decisions applied,
    and never a trace ops flagged as a bad decision.

    The tool filter is a coarse text match here (JSON containment is not portable to SQLite);
    ``export_lines`` checks the exact tool name on each row.
    """
    queryset = queryset.filter(flagged_bad_at__isnull=True)
    if options.since is not None:
        queryset = queryset.filter(created_at__gte=options.since)
    if options.decision:
        queryset = queryset.filter(decision=options.decision)
    if options.format in _ELIGIBLE:
        queryset = queryset.filter(decision__in=_ELIGIBLE[options.format])
    if options.tool:
        queryset = queryset.filter(
            Q(proposal__icontains=options.tool) | Q(final_action__icontains=options.tool)
        )
    return queryset.order_by("created_at", "pk")


def _uses_tool(row: dict[str, Any], tool: str) -> bool:
    # The model's proposal or the human's action: an edit may have switched tools.
    return any(name == tool for name, _ in _calls(row["proposal"]) + _calls(row["final_action"]))


def export_lines(
    queryset: QuerySet[GoldenTrace],
    options: ExportOptions,
    *,
    stats: ExportStats | None = None,
    progress: Callable[[int], Any] | None = None,
) -> Iterator[str]:
    """JSONL lines (each ending in a newline) for the traces in ``queryset`` under ``options``.

    Rows are read in chunks with only the needed columns and never held beyond their line, so
    memory stays flat. ``stats`` is filled in as lines are generated; ``progress(1)`` is called
    for each row read (``select_traces(...).count()`` is the total).
    """
    stats = stats if stats is not None else ExportStats()
    redactor = Redactor() if options.redact else None
    build = _BUILDERS[options.format]
    columns = _RAW_COLUMNS if options.format == "raw" else _TRAINING_COLUMNS
    if redactor is not None:
        stats.placeholders = redactor.counts
    rows = select_traces(queryset, options).values(*columns).iterator(chunk_size=CHUNK_SIZE)
    for row in rows:
        if progress is not None:
            progress(1)
        if options.tool and not _uses_tool(row, options.tool):
            continue
        stats.read[row["decision"]] += 1
        try:
            record = build(row, redactor)
        except SkipTrace as skip:
            stats.skipped[skip.reason] += 1
            continue
        stats.written[row["decision"]] += 1
        stats.lines += 1
        yield json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


def encode_line(line: str) -> bytes:
    # A lone surrogate (possible from a "\ud800" escape in stored JSON) cannot be UTF-8: replace it
    # rather than fail the export on one character.
    return line.encode("utf-8", errors="replace")


# --- Files and manifests ---


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.json")


def build_manifest(
    *, options: ExportOptions, stats: ExportStats, sha256: str, size_bytes: int, file_name: str
) -> dict[str, Any]:
    """The manifest of an export: what was asked, what was read and written, and the checksum."""

    def per_decision(counter: Counter[str]) -> dict[str, int]:
        return {decision: counter.get(decision, 0) for decision in DECISIONS}

    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "format": options.format,
        "file": file_name,
        "created_at": timezone.now().isoformat(),
        "filters": options.filters(),
        "counts": {
            "read": per_decision(stats.read),
            "written": per_decision(stats.written),
            "skipped": dict(sorted(stats.skipped.items())),
        },
        "lines": stats.lines,
        "bytes": size_bytes,
        "sha256": sha256,
    }
    if options.redact:
        manifest["placeholders"] = dict(sorted(stats.placeholders.items()))
    if options.format == "dpo":
        manifest["denial_chosen"] = DENIAL_REPLY
    return manifest


def write_manifest(path: Path, manifest: dict[str, Any]) -> Path:
    """Writes ``manifest`` beside the export at ``path`` (``FILE.manifest.json``)."""
    target = manifest_path(path)
    target.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return target


def export_to_file(
    queryset: QuerySet[GoldenTrace],
    options: ExportOptions,
    path: Path,
    *,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Writes the export to ``path`` and its manifest beside it; returns the manifest.

    The file is written under a temporary name and renamed when complete, so a file with a
    manifest is never a partial one.
    """
    stats = ExportStats()
    digest = hashlib.sha256()
    size = 0
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("wb", buffering=1 << 20) as out:
            for line in export_lines(queryset, options, stats=stats, progress=progress):
                data = encode_line(line)
                digest.update(data)
                out.write(data)
                size += len(data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    manifest = build_manifest(
        options=options, stats=stats, sha256=digest.hexdigest(), size_bytes=size, file_name=path.name
    )
    write_manifest(path, manifest)
    return manifest

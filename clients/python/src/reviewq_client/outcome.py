"""What reviewq answered about a request: its status, the released action and who decided."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

FINAL_STATUSES = frozenset({"released", "denied", "expired", "failed", "cancelled"})


@dataclass(frozen=True)
class ToolCall:
    """One released tool call; ``arguments`` are decoded (and may be a reviewer's edit)."""

    id: str
    name: str
    arguments: dict[str, Any]

    def as_openai(self) -> dict[str, Any]:
        """The call in OpenAI's format (arguments as a JSON string)."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments)},
        }


@dataclass(frozen=True)
class Outcome:
    """A request as reviewq last reported it (``raw`` is the JSON as received)."""

    id: str
    status: str
    action: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Outcome:
        return cls(
            id=str(body["id"]),
            status=str(body["status"]),
            action=body.get("action"),
            decision=body.get("decision"),
            raw=body,
        )

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def pending(self) -> bool:
        """Not decided yet: in the pipeline or awaiting a reviewer."""
        return not self.final

    @property
    def awaiting_review(self) -> bool:
        return self.status == "awaiting_review"

    @property
    def routed(self) -> bool:
        """Out of reviewq's pipeline: final, or in front of a reviewer."""
        return self.final or self.awaiting_review

    @property
    def released(self) -> bool:
        return self.status == "released"

    @property
    def denied(self) -> bool:
        return self.status == "denied"

    @property
    def expired(self) -> bool:
        return self.status == "expired"

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The released action's tool calls (empty unless released with tool calls)."""
        if not self.action or self.action.get("type") != "tool_calls":
            return []
        return [_tool_call(call) for call in self.action.get("tool_calls") or []]

    @property
    def content(self) -> str | None:
        """A released reply's text."""
        if self.action and self.action.get("type") == "respond":
            return str(self.action.get("content") or "")
        return None

    @property
    def action_id(self) -> str | None:
        """The released action's id: use it as your idempotency key when you execute it."""
        return str(self.action["id"]) if self.action and self.action.get("id") else None

    @property
    def reason(self) -> str:
        """Why: a reviewer's denial reason, the policy's hold or release reason, an expiry's."""
        return str((self.decision or {}).get("reason") or "")

    @property
    def decided_by(self) -> str:
        """``reviewer``, ``policy``, ``pipeline``, ``expiry``, ``agent`` (a cancel), ..."""
        return str((self.decision or {}).get("by") or "")

    @property
    def reviewer(self) -> str | None:
        """The reviewer who decided, if a reviewer did."""
        value = (self.decision or {}).get("reviewer")
        return str(value) if value else None

    @property
    def edited(self) -> bool:
        """A reviewer changed the action before releasing it."""
        return (self.decision or {}).get("decision") == "edit"


def _tool_call(call: dict[str, Any]) -> ToolCall:
    # The API sends decoded arguments; an OpenAI-shaped call ({"function": {...}}) is read too.
    function = call.get("function") or {}
    arguments = call.get("arguments", function.get("arguments"))
    if isinstance(arguments, str):
        arguments = json.loads(arguments) if arguments.strip() else {}
    return ToolCall(
        id=str(call.get("id") or ""),
        name=str(call.get("name") or function.get("name") or ""),
        arguments=dict(arguments or {}),
    )

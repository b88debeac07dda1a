"""reviewq's Python client: submit an agent's action, wait for the review, run it once released."""

from __future__ import annotations

from reviewq_client.client import AsyncReviewqClient, ReviewqClient
from reviewq_client.errors import (
    AlreadyFinal,
    Conflict,
    ConnectionFailed,
    Denied,
    Forbidden,
    InvalidProposedAction,
    InvalidRequest,
    NotFound,
    NotReleased,
    RateLimited,
    ReviewqError,
    ReviewTimeout,
    ServerError,
    Unauthorized,
)
from reviewq_client.outcome import FINAL_STATUSES, Outcome, ToolCall
from reviewq_client.review_gate import require_review
from reviewq_client.tool_schema import function_tool, propose_reply, propose_tool_call, propose_tool_calls
from reviewq_client.webhooks import InvalidSignature, WebhookEvent, verify_webhook

__all__ = [
    "FINAL_STATUSES",
    "AlreadyFinal",
    "AsyncReviewqClient",
    "Conflict",
    "ConnectionFailed",
    "Denied",
    "Forbidden",
    "InvalidProposedAction",
    "InvalidRequest",
    "InvalidSignature",
    "NotFound",
    "NotReleased",
    "Outcome",
    "RateLimited",
    "ReviewTimeout",
    "ReviewqClient",
    "ReviewqError",
    "ServerError",
    "ToolCall",
    "Unauthorized",
    "WebhookEvent",
    "function_tool",
    "propose_reply",
    "propose_tool_call",
    "propose_tool_calls",
    "require_review",
    "verify_webhook",
]

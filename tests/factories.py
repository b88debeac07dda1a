"""Request bodies in the OpenAI format, built from the τ-bench retail tools."""

from __future__ import annotations

import json
from typing import Any

from reviewq.config.demo import retail_tools


def tools(*names: str) -> list[dict[str, Any]]:
    every = retail_tools()
    if not names:
        return every
    return [tool for tool in every if tool["function"]["name"] in names]


def body(content: str, *tool_names: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "tools": tools(*tool_names), **extra}


def read_body(**extra: Any) -> dict[str, Any]:
    """A request the fake model answers with a read-only call: released automatically."""
    return body(
        "Get order details for order_id=#W2378156", "get_order_details", "cancel_pending_order", **extra
    )


def risky_body(**extra: Any) -> dict[str, Any]:
    """A request the fake model answers with a cancellation: held for a human."""
    return body(
        'Please cancel pending order order_id=#W2378156 reason="no longer needed"',
        "get_order_details",
        "cancel_pending_order",
        **extra,
    )


def post_request(client: Any, key: str, payload: Any, **headers: Any) -> Any:
    """POST /api/v1/requests with the agent key ``key``; ``payload`` as JSON (a string as is)."""
    return client.post(
        "/api/v1/requests",
        payload if isinstance(payload, str) else json.dumps(payload),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
        **headers,
    )

"""The MCP server, started as ``python -m reviewq_client.mcp_server`` and driven over stdio by the
real ``mcp`` client against a live reviewq: submit, decide, read the decision, cancel."""

from __future__ import annotations

import asyncio
import json
import queue
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.types import TextContent
from reviewq_client import function_tool

from reviewq.models import ReviewItem
from reviewq.services.decisions import review_edit
from tests.test_client_fixtures import (
    in_background,
    lookup_invoice,
    pending_item,
    refund_invoice,
    register_tools,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded")]

REFUND = {"invoice_id": "INV-1001", "amount": 80, "reason": "duplicate"}
ASK = "Please refund 80 EUR on invoice INV-1001, it was charged twice (duplicate)."


@pytest.fixture(autouse=True)
def _tools(seeded: None) -> None:
    register_tools()


def text(result: Any) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


def server(url: str, key: str, tools_file: Path) -> StdioServerParameters:
    # The tools as ops registered them: an agent's own wording of a tool is held for a human.
    tools_file.write_text(json.dumps([function_tool(lookup_invoice), function_tool(refund_invoice)]))
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "reviewq_client.mcp_server"],
        env={"REVIEWQ_URL": url, "REVIEWQ_API_KEY": key, "REVIEWQ_TOOLS": str(tools_file)},
    )


def test_an_agent_submits_over_mcp_and_gets_the_reviewers_decision(
    live_server_url: str, agent: Any, reviewer: Any, tmp_path: Path
) -> None:
    held_ids: queue.Queue[str] = queue.Queue()
    decided: queue.Queue[bool] = queue.Queue()

    async def session() -> dict[str, Any]:
        async with Client(server(live_server_url, agent[1], tmp_path / "tools.json")) as mcp:
            names = {tool.name for tool in (await mcp.list_tools()).tools}
            assert names == {"submit_for_review", "get_decision", "cancel_review"}
            results: dict[str, Any] = {}

            read = await mcp.call_tool(
                "submit_for_review",
                {
                    "tool_name": "lookup_invoice",
                    "arguments": {"invoice_id": "INV-1001"},
                    "context": "Status of INV-1001?",
                },
            )
            results["read"] = read.structured_content

            held = await mcp.call_tool(
                "submit_for_review",
                {"tool_name": "refund_invoice", "arguments": REFUND, "context": ASK},
            )
            results["held"] = held.structured_content
            held_ids.put(held.structured_content["request_id"])
            decided.get(timeout=20)
            answer = await mcp.call_tool(
                "get_decision", {"request_id": results["held"]["request_id"], "wait_s": 10}
            )
            results["decided"] = answer.structured_content

            again = await mcp.call_tool(
                "submit_for_review", {"tool_name": "refund_invoice", "arguments": REFUND, "context": ASK}
            )
            withdrawn = await mcp.call_tool(
                "cancel_review",
                {"request_id": again.structured_content["request_id"], "reason": "user changed mind"},
            )
            results["withdrawn"] = withdrawn.structured_content
            late = await mcp.call_tool(
                "cancel_review", {"request_id": again.structured_content["request_id"]}
            )
            results["late"] = (late.is_error, text(late))

            # A call whose invoice id nobody mentioned: the validators' findings, as a tool error.
            refused = await mcp.call_tool(
                "submit_for_review",
                {
                    "tool_name": "lookup_invoice",
                    "arguments": {"invoice_id": "INV-7777"},
                    "context": "Status of INV-1001?",
                },
            )
            results["refused"] = (refused.is_error, text(refused))
            return results

    with in_background(lambda: asyncio.run(session())) as call:
        request_id = held_ids.get(timeout=30)
        review_edit(
            item_id=pending_item(request_id=request_id).id,
            reviewer=reviewer,
            tool_calls=[{"name": "refund_invoice", "arguments": {**REFUND, "amount": 60}}],
        )
        decided.put(True)
        results = call.result(timeout=60)

    assert results["read"]["released"] is True
    assert results["read"]["tool_calls"] == [
        {"name": "lookup_invoice", "arguments": {"invoice_id": "INV-1001"}}
    ]
    assert (results["held"]["status"], results["held"]["released"]) == ("awaiting_review", False)
    decided_answer = results["decided"]
    assert (decided_answer["status"], decided_answer["edited"], decided_answer["reviewer"]) == (
        "released",
        True,
        "alice",
    )
    assert decided_answer["tool_calls"] == [{"name": "refund_invoice", "arguments": {**REFUND, "amount": 60}}]
    assert results["withdrawn"]["status"] == "cancelled"
    assert results["withdrawn"]["reason"] == "user changed mind"
    assert results["late"][0] is True and "already_final" in results["late"][1]
    assert results["refused"][0] is True
    assert (
        "invalid_proposed_action" in results["refused"][1]
        and "$.arguments.invoice_id" in results["refused"][1]
    )
    assert ReviewItem.objects.filter(status="withdrawn").count() == 1

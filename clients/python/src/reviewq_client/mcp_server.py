"""An MCP server that lets any MCP-speaking agent ask reviewq before it acts.

Tools: ``submit_for_review`` (a tool call the agent means to make, with what the user asked),
``get_decision`` (waits up to ``wait_s`` for it) and ``cancel_review``. Each answers with the
request's status and, once released, the calls to make (with the reviewer's edits).

Run it over stdio with the agent key in the environment::

    REVIEWQ_URL=http://127.0.0.1:8000 REVIEWQ_API_KEY=rq_... python -m reviewq_client.mcp_server

reviewq holds a call whose tool the agent describes otherwise than ops registered it, so give the
server the tools' definitions as ops know them: ``REVIEWQ_TOOLS=tools.json`` (a JSON list of OpenAI
function tools). For a tool not in it, the agent's ``description`` and ``parameters`` are sent, or
a schema guessed from the arguments.

Needs the ``mcp`` extra. (mcp 2 renamed ``FastMCP`` to ``MCPServer``; this is that server.)
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from reviewq_client.client import AsyncReviewqClient
from reviewq_client.errors import ReviewqError
from reviewq_client.outcome import Outcome
from reviewq_client.review_gate import default_messages
from reviewq_client.tool_schema import propose_tool_call

INSTRUCTIONS = (
    "Before any action that moves money, changes personal data, deletes something or contacts a "
    "person, call submit_for_review with the tool call you mean to make. Make the call only if the "
    "answer says released, and with the arguments it gives (a reviewer may have edited them). If it "
    "says awaiting_review, call get_decision with its request_id until it is final."
)
# How long submit_for_review waits for reviewq to release or hold the call.
ROUTE_WAIT_S = 10.0
_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


def decision(outcome: Outcome) -> dict[str, Any]:
    """What a tool answers: the status, and once released the calls to make."""
    answer: dict[str, Any] = {
        "request_id": outcome.id,
        "status": outcome.status,
        "final": outcome.final,
        "released": outcome.released,
        "reason": outcome.reason,
        "decided_by": outcome.decided_by,
        "reviewer": outcome.reviewer,
        "edited": outcome.edited,
    }
    if outcome.released:
        answer["tool_calls"] = [
            {"name": call.name, "arguments": call.arguments} for call in outcome.tool_calls
        ]
        if outcome.content is not None:
            answer["content"] = outcome.content
    return answer


def guessed_parameters(arguments: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema for a tool the agent gave no schema for: the types of the values it sent."""
    properties = {}
    for key, value in arguments.items():
        json_type = next((name for kind, name in _JSON_TYPES.items() if type(value) is kind), None)
        properties[key] = {"type": json_type} if json_type else {}
    return {"type": "object", "properties": properties, "required": list(arguments)}


def load_tools(path: str | Path) -> dict[str, dict[str, Any]]:
    """OpenAI function tools from a JSON file, by name."""
    tools = json.loads(Path(path).read_text())
    return {str(tool["function"]["name"]): tool for tool in tools}


def build_server(client: AsyncReviewqClient, tools: dict[str, dict[str, Any]] | None = None) -> MCPServer:
    """The MCP server; ``tools`` are the definitions to send for the tools they name."""
    known = tools or {}
    server: MCPServer = MCPServer("reviewq", instructions=INSTRUCTIONS)

    @server.tool()
    async def submit_for_review(
        tool_name: str,
        arguments: dict[str, Any],
        context: str = "",
        description: str = "",
        parameters: dict[str, Any] | None = None,
        messages: list[dict[str, Any]] | None = None,
        wait_s: float = 0.0,
    ) -> dict[str, Any]:
        """Ask reviewq whether a tool call may be made. Make it only if the answer is released,
        with the arguments the answer gives.

        Args:
            tool_name: The tool you mean to call.
            arguments: Its arguments.
            context: What the user asked for, in their words (identifiers and amounts in the
                arguments are checked against it).
            description: What the tool does (unless the server knows the tool).
            parameters: The tool's JSON Schema, if you have it (unless the server knows the tool).
            messages: The conversation so far in OpenAI's chat format, instead of context.
            wait_s: How long to wait for a reviewer before answering awaiting_review (0: answer
                as soon as reviewq released or held the call).
        """
        tool = known.get(tool_name) or {
            "type": "function",
            "function": {
                "name": tool_name,
                "description": description,
                "parameters": parameters or guessed_parameters(arguments),
            },
        }
        if messages:
            conversation = messages
        elif context:
            conversation = [{"role": "user", "content": context}]
        else:
            conversation = default_messages(
                tool_name, str(tool["function"].get("description", "")), arguments
            )
        try:
            outcome = await client.submit(
                conversation,
                [tool],
                proposed_action=propose_tool_call(tool_name, arguments),
                metadata={"via": "reviewq_client.mcp_server"},
            )
            if not outcome.routed:
                outcome = await client.wait_routed(outcome.id, timeout_s=ROUTE_WAIT_S)
            if outcome.pending and wait_s > 0:
                outcome = await client.wait(outcome.id, timeout_s=wait_s)
        except ReviewqError as exc:
            raise ToolError(_explained(exc)) from exc
        return decision(outcome)

    @server.tool()
    async def get_decision(request_id: str, wait_s: float = 0.0) -> dict[str, Any]:
        """reviewq's decision on a submitted call, waiting up to wait_s seconds for it.

        Args:
            request_id: The request_id submit_for_review answered with.
            wait_s: How long to wait for a final decision.
        """
        try:
            outcome = await (client.wait(request_id, timeout_s=wait_s) if wait_s else client.get(request_id))
        except ReviewqError as exc:
            raise ToolError(_explained(exc)) from exc
        return decision(outcome)

    @server.tool()
    async def cancel_review(request_id: str, reason: str = "") -> dict[str, Any]:
        """Withdraw a submitted call you no longer mean to make.

        Args:
            request_id: The request_id submit_for_review answered with.
            reason: Why, for the reviewers.
        """
        try:
            outcome = await client.cancel(request_id, reason)
        except ReviewqError as exc:
            raise ToolError(_explained(exc)) from exc
        return decision(outcome)

    return server


def _explained(exc: ReviewqError) -> str:
    issues = getattr(exc, "issues", None)
    return f"{exc}" + (f"; issues: {json.dumps(issues)}" if issues else "")


def main() -> None:
    """Serves the tools over stdio: the key from REVIEWQ_API_KEY, the server from REVIEWQ_URL, the
    tools' definitions from the file REVIEWQ_TOOLS names (if any)."""
    tools_file = os.getenv("REVIEWQ_TOOLS", "")
    # A line per HTTP request on the host's stderr says nothing the tools' answers do not.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    build_server(AsyncReviewqClient.from_env(), load_tools(tools_file) if tools_file else None).run("stdio")


if __name__ == "__main__":
    main()

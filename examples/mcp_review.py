"""reviewq's MCP server, driven as an MCP host would drive it (over stdio).

    REVIEWQ_API_KEY=rq_... .venv/bin/python examples/mcp_review.py

It starts ``python -m reviewq_client.mcp_server`` with the key, submits a cancellation, and asks
for the decision until a reviewer at http://127.0.0.1:8000/review/ has made one. An MCP host
(Claude Desktop, an IDE, your own agent) is configured the same way: the command, its arguments
and the environment below.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from mcp import Client
from mcp.client.stdio import StdioServerParameters

# reviewq holds a call whose tool definition differs from the one ops registered: give the server
# the definitions ops know (here the demo's retail tools, as `make run` seeds them).
RETAIL_TOOLS = Path(__file__).resolve().parent.parent / "reviewq" / "data" / "retail_tools.json"


def server() -> StdioServerParameters:
    env = {
        "REVIEWQ_URL": os.getenv("REVIEWQ_URL", "http://127.0.0.1:8000"),
        "REVIEWQ_API_KEY": os.environ["REVIEWQ_API_KEY"],
    }
    if RETAIL_TOOLS.exists():
        env["REVIEWQ_TOOLS"] = str(RETAIL_TOOLS)
    return StdioServerParameters(command=sys.executable, args=["-m", "reviewq_client.mcp_server"], env=env)


async def main() -> None:
    async with Client(server()) as mcp:
        print("tools:", [tool.name for tool in (await mcp.list_tools()).tools])
        submitted = await mcp.call_tool(
            "submit_for_review",
            {
                "tool_name": "cancel_pending_order",
                "arguments": {"order_id": "#W2378156", "reason": "no longer needed"},
                "context": "Cancel my order #W2378156, I no longer need it (no longer needed).",
            },
        )
        answer: Any = submitted.structured_content
        print(json.dumps(answer, indent=2))
        while not answer["final"]:
            print("waiting for a reviewer at http://127.0.0.1:8000/review/ ...")
            decision = await mcp.call_tool("get_decision", {"request_id": answer["request_id"], "wait_s": 25})
            answer = decision.structured_content
        print(json.dumps(answer, indent=2))


if __name__ == "__main__":
    asyncio.run(main())

"""Agents' JSON Schemas are hostile input: no ReDoS, no remote $ref, no reference loop, no 500."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.test import Client
from referencing.exceptions import Unresolvable

from reviewq.models import Request, ReviewItem
from reviewq.services import decisions, intake
from router.backends.fake import FakeBackend
from router.untrusted_schemas import schema_problem, validator_for
from router.validators import validate_tool_call
from tests.factories import post_request

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded", "inline_pipeline")]

# Catastrophic backtracking in Python's re: each extra "a" doubles the time of a failed match.
EVIL = "^(a+)+$"
EVIL_VALUE = "a" * 40 + "!"


def tool(parameters: dict[str, Any], name: str = "lookup") -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": name, "description": "Look up.", "parameters": parameters},
    }


def evil_tool() -> dict[str, Any]:
    return tool(
        {"type": "object", "properties": {"code": {"type": "string", "pattern": EVIL}}, "required": ["code"]}
    )


def post(client: Client, key: str, payload: dict[str, Any]) -> Any:
    return post_request(client, key, payload)


@pytest.fixture
def schema_server() -> Iterator[dict[str, Any]]:
    """An HTTP server on 127.0.0.1 that counts every request a schema reference could make."""
    seen: dict[str, Any] = {"gets": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen["gets"] += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"type": "string"}')

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    seen["url"] = f"http://127.0.0.1:{server.server_address[1]}/schema.json"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield seen
    server.shutdown()
    server.server_close()


def test_a_backtracking_pattern_is_matched_in_linear_time() -> None:
    started = time.perf_counter()
    [issue] = validate_tool_call({"name": "lookup", "arguments": {"code": EVIL_VALUE}}, [evil_tool()])
    assert time.perf_counter() - started < 0.5  # Python's re: hours for this value
    assert "does not match" in issue.message
    assert validate_tool_call({"name": "lookup", "arguments": {"code": "aaaa"}}, [evil_tool()]) == []


def test_a_reviewers_edit_against_a_backtracking_pattern_is_answered_at_once(
    agent: Any, reviewer: Any
) -> None:
    FakeBackend.scripted_outputs.extend(["not json", "not json"])
    request, _ = intake.request_create(
        agent_key=agent[0],
        payload={"messages": [{"role": "user", "content": "look up code aaaa"}], "tools": [evil_tool()]},
    )
    item = ReviewItem.objects.get(request=request)
    started = time.perf_counter()
    with pytest.raises(Exception, match="does not match"):
        decisions.review_edit(
            item_id=item.id,
            reviewer=reviewer,
            tool_calls=[{"name": "lookup", "arguments": {"code": EVIL_VALUE}}],
        )
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("(?=a)b", "linear time"),  # a lookahead: RE2 cannot run it
        ("a{4294967296}", "repeats more than"),  # once an OverflowError, a 500
        ("(a{1000}){1000}", "linear time"),
        ("a" * 600, "longer than"),
    ],
)
def test_a_pattern_that_cannot_run_safely_is_refused_at_intake(
    client: Client, agent: Any, pattern: str, why: str
) -> None:
    parameters = {"type": "object", "properties": {"code": {"type": "string", "pattern": pattern}}}
    response = post(
        client, agent[1], {"messages": [{"role": "user", "content": "hi"}], "tools": [tool(parameters)]}
    )
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_tool_schema" and why in response.json()["message"]
    assert not Request.objects.exists()


def test_a_remote_reference_is_refused_and_never_fetched(
    client: Client, agent: Any, schema_server: dict[str, Any]
) -> None:
    remote = {"type": "object", "properties": {"code": {"$ref": schema_server["url"]}}}
    for extra in ({"tools": [tool(remote)]}, {"response_schema": remote}):
        response = post(client, agent[1], {"messages": [{"role": "user", "content": "hi"}], **extra})
        assert response.status_code == 400, response.content
        assert "only references inside the schema" in response.json()["message"]
    # Validation itself resolves nothing outside the schema, whatever reaches it.
    with pytest.raises(Unresolvable):
        list(validator_for(remote).iter_errors({"code": "x"}))
    assert schema_server["gets"] == 0


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#", "type": "object"},
        {
            "type": "object",
            "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}},
            "properties": {"x": {"$ref": "#/$defs/a"}},
        },
        {"type": "object", "properties": {"x": {"$ref": "#/$defs/missing"}}},
        {"type": "object", "$id": "https://example.com/s", "properties": {}},
        {"type": "object", "unevaluatedProperties": False, "patternProperties": {EVIL: {}}},
    ],
)
def test_references_that_loop_or_leave_the_schema_are_refused(schema: dict[str, Any]) -> None:
    assert schema_problem(schema, "parameters") is not None


def test_a_recursive_schema_that_descends_is_fine() -> None:
    tree = {
        "type": "object",
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            }
        },
        "properties": {"root": {"$ref": "#/$defs/node"}},
    }
    assert schema_problem(tree, "parameters") is None
    assert list(validator_for(tree).iter_errors({"root": {"kids": [{"kids": []}]}})) == []

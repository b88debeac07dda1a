"""``import_traces``: a team's OpenAI chat-format logs become upstream calls, once each."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from reviewq.models import AgentKey
from reviewq.services.agent_keys import agent_key_create
from router.contracts import TaskType, Tier
from router.models import ModelSpec
from telemetry.models import UpstreamCall
from tests.factories import tools

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("seeded")]

TOOLS = tools("get_order_details", "cancel_pending_order")


def assistant_call(name: str, **arguments: Any) -> dict[str, Any]:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }
    return {"role": "assistant", "content": None, "tool_calls": [call]}


def line(user: str, answer: dict[str, Any], **extra: Any) -> str:
    return json.dumps({"messages": [{"role": "user", "content": user}, answer], "tools": TOOLS, **extra})


LOOKUP = line(
    "Get order details for order_id=#W2378156",
    assistant_call("get_order_details", order_id="#W2378156"),
    model="gpt-team",
    usage={"prompt_tokens": 1000, "completion_tokens": 20},
)
CANCEL = line(
    'Cancel order_id=#W2378156 reason="no longer needed"',
    assistant_call("cancel_pending_order", order_id="#W2378156", reason="no longer needed"),
)
REPLY = line("Thanks!", {"role": "assistant", "content": "You're welcome."})


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "logs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(path: Path, *args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command("import_traces", str(path), *args, stdout=out, verbosity=1)
    return out.getvalue()


def test_a_file_is_imported_once_with_costs_and_policy_decisions(tmp_path: Path) -> None:
    ModelSpec.objects.create(
        name="gpt-team",
        backend=ModelSpec.Backend.OPENAI_COMPATIBLE,
        model_path="gpt-team",
        tier=Tier.LLM,
        strengths=[TaskType.TOOL_USE],
        price_input_per_mtok=Decimal("2"),
        price_output_per_mtok=Decimal("8"),
        enabled=False,
    )
    path = write(tmp_path, LOOKUP, CANCEL, REPLY, LOOKUP)
    assert "3 calls imported from 4 lines: 1 already known, 0 skipped" in run(path)
    assert "0 calls imported from 4 lines: 4 already known" in run(path)
    calls = {call.tool_name: call for call in UpstreamCall.objects.all()}
    assert set(calls) == {"get_order_details", "cancel_pending_order", ""}
    lookup = calls["get_order_details"]
    assert (lookup.source, lookup.tokens_in, lookup.cost_usd) == ("imported", 1000, Decimal("0.00216"))
    assert lookup.messages == [{"role": "user", "content": "Get order details for order_id=#W2378156"}]
    assert lookup.answer["tool_calls"][0]["function"]["name"] == "get_order_details"  # type: ignore[index]
    assert (lookup.would_hold, calls["cancel_pending_order"].would_hold, calls[""].would_hold) == (
        False,
        True,
        False,
    )


def test_a_bad_line_is_named_and_all_or_nothing_imports_nothing(tmp_path: Path) -> None:
    orphan_result = json.dumps(
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "tool", "tool_call_id": "call_9", "content": "{}"},
                {"role": "assistant", "content": "ok"},
            ]
        }
    )
    path = write(
        tmp_path,
        LOOKUP,
        "{not json",
        CANCEL,
        orphan_result,
        json.dumps({"messages": [{"role": "user", "content": "no answer"}]}),
    )
    with pytest.raises(CommandError, match="line 2: this line is not valid JSON"):
        run(path, "--all-or-nothing")
    assert not UpstreamCall.objects.exists()

    out = run(path)
    assert "2 calls imported from 5 lines: 0 already known, 3 skipped" in out
    assert "line 2: this line is not valid JSON" in out
    assert "line 4: messages[1]: tool_call_id 'call_9' does not answer any earlier assistant tool call" in out
    assert "line 5: the last message must be the assistant's answer" in out


def test_hostile_lines_are_refused_like_hostile_requests(tmp_path: Path) -> None:
    nul = line("hi\u0000there", {"role": "assistant", "content": "ok"})
    backtracking = json.dumps(
        {
            "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "ok"}],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "lookup",
                        "parameters": {
                            "type": "object",
                            "properties": {"q": {"type": "string", "pattern": "(a+)+\\1$"}},
                        },
                    },
                }
            ],
        }
    )
    out = run(write(tmp_path, nul, backtracking))
    assert "0 calls imported from 2 lines: 0 already known, 2 skipped" in out
    assert "line 1: " in out and "NUL" in out
    assert "line 2: tools[0] (lookup)" in out


def test_the_ops_api_imports_jsonl_and_refuses_agent_keys(client: Client, tmp_path: Path) -> None:
    _, ops_key = agent_key_create(name="ops", scope=AgentKey.Scope.OPS)
    _, agent_key = agent_key_create(name="bot")
    body = "\n".join([LOOKUP, CANCEL])
    url = "/api/v1/traces/import"
    refused = client.post(
        url, body, content_type="application/x-ndjson", HTTP_AUTHORIZATION=f"Bearer {agent_key}"
    )
    assert refused.status_code == 401
    answer = client.post(
        url, body, content_type="application/x-ndjson", HTTP_AUTHORIZATION=f"Bearer {ops_key}"
    )
    assert answer.status_code == 200, answer.content
    assert answer.json() == {"lines": 2, "imported": 2, "duplicates": 0, "skipped": {}, "errors": []}
    bad = client.post(
        url + "?all_or_nothing=true",
        body + "\n[1]",
        content_type="application/x-ndjson",
        HTTP_AUTHORIZATION=f"Bearer {ops_key}",
    )
    assert bad.status_code == 422
    assert bad.json()["message"].startswith("line 3: ")
    assert UpstreamCall.objects.count() == 2


def test_compare_upstream_calls_records_the_small_models_agreement(tmp_path: Path) -> None:
    run(write(tmp_path, LOOKUP, REPLY))
    from io import StringIO

    out = StringIO()
    call_command("compare_upstream_calls", stdout=out, verbosity=1)
    assert "2 calls compared" in out.getvalue()
    agreements = dict(UpstreamCall.objects.values_list("tool_name", "agreement"))
    assert agreements["get_order_details"] == "agrees"
    # Where the upstream LLM replied, the fake small model calls a tool with values the
    # conversation does not hold: no valid answer.
    assert agreements[""] == "no_answer"
    assert UpstreamCall.objects.get(tool_name="").slm_issues

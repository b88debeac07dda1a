"""Golden-trace export: the formats, filters, redaction, manifest, API, admin action and datasets."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import AsyncClient, Client
from django.utils import timezone

from reviewq.errors import ApplicationError
from reviewq.models import AgentKey, GoldenTrace, ReviewItem
from reviewq.services import agent_keys, decisions, intake
from telemetry import exports
from telemetry.redaction import Redactor
from tests.factories import body, read_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded", "inline_pipeline")]

EMAIL = "jane.doe@example.com"
PHONE = "+1 415-555-0134"
CANCEL = (
    f"Hi, this is {EMAIL}, phone {PHONE}. "
    'Please cancel pending order order_id=#W2378156 reason="no longer needed"'
)
TRANSFER = f'Please transfer to human agents summary="customer {EMAIL} wants a call back on {PHONE}"'
DENY_REASON = f"check the order first; {EMAIL} already has an open ticket"


def looked_up_then_cancel() -> dict[str, Any]:
    """A conversation where the agent already looked the customer up by email (a tool call)."""
    payload = body(CANCEL, "find_user_id_by_email", "get_order_details", "cancel_pending_order")
    payload["messages"] += [
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_lookup",
                    "type": "function",
                    "function": {"name": "find_user_id_by_email", "arguments": json.dumps({"email": EMAIL})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_lookup", "content": f"jane_doe_1234 (phone {PHONE})"},
        {"role": "user", "content": "Yes, please cancel pending order now."},
    ]
    return payload


@dataclass
class Traces:
    approved: GoldenTrace
    edited: GoldenTrace
    denied: GoldenTrace


def _held(agent_key: AgentKey, payload: dict[str, Any]) -> ReviewItem:
    request, _ = intake.request_create(agent_key=agent_key, payload=payload)
    return ReviewItem.objects.get(request=request)


@pytest.fixture
def traces(agent: Any, reviewer: User) -> Traces:
    """One approval, one edit, one denial, decided through the real services on the fake model."""
    agent_key = agent[0]
    intake.request_create(agent_key=agent_key, payload=read_body())  # released: no trace
    approved = _held(agent_key, looked_up_then_cancel())
    decisions.review_approve(item_id=approved.id, reviewer=reviewer)
    edited = _held(agent_key, body(CANCEL, "get_order_details", "cancel_pending_order"))
    decisions.review_edit(
        item_id=edited.id,
        reviewer=reviewer,
        tool_calls=[
            {
                "name": "cancel_pending_order",
                "arguments": {"order_id": "#W2378156", "reason": "ordered by mistake"},
            }
        ],
    )
    denied = _held(agent_key, body(TRANSFER, "get_order_details", "transfer_to_human_agents"))
    decisions.review_deny(item_id=denied.id, reviewer=reviewer, reason=DENY_REASON)
    return Traces(
        approved=GoldenTrace.objects.get(review_item_id=approved.id),
        edited=GoldenTrace.objects.get(review_item_id=edited.id),
        denied=GoldenTrace.objects.get(review_item_id=denied.id),
    )


def export(format: str, **filters: Any) -> list[dict[str, Any]]:
    options = exports.export_options(format=format, **filters)
    return [json.loads(line) for line in exports.export_lines(GoldenTrace.objects.all(), options)]


def streamed(response: Any) -> bytes:
    assert response.streaming, response.content
    return b"".join(response.streaming_content)


def arguments(turn: dict[str, Any]) -> dict[str, Any]:
    [call] = turn["tool_calls"]
    assert call["type"] == "function"
    assert isinstance(call["function"]["arguments"], str)  # a JSON string, as OpenAI has it
    return json.loads(call["function"]["arguments"])


# --- Formats ---


def test_sft_ends_each_conversation_with_the_released_action(traces: Traces) -> None:
    approved, edited = export("sft")  # the denial has no positive target
    for line, trace in ((approved, traces.approved), (edited, traces.edited)):
        assert set(line) == {"messages", "tools"}
        *conversation, answer = line["messages"]
        assert conversation == trace.context["messages"]
        assert line["tools"] == trace.context["tools"]
        assert answer["role"] == "assistant"
        [call] = answer["tool_calls"]
        assert trace.final_action is not None
        assert call["id"] == trace.final_action["tool_calls"][0]["id"]
        assert call["function"]["name"] == "cancel_pending_order"
    assert arguments(approved["messages"][-1]) == {"order_id": "#W2378156", "reason": "no longer needed"}
    assert arguments(edited["messages"][-1]) == {"order_id": "#W2378156", "reason": "ordered by mistake"}


def test_sft_writes_a_reply_as_content() -> None:
    turn = exports.assistant_turn({"id": "act_1", "type": "respond", "content": "Hello!"})
    assert turn == {"role": "assistant", "content": "Hello!"}
    turn = exports.assistant_turn({"id": "act_2", "type": "json", "data": {"city": "Köln"}})
    assert turn == {"role": "assistant", "content": '{"city": "Köln"}'}
    turn = exports.assistant_turn({"id": "act_3", "type": "label", "label": "refund", "score": 0.9})
    assert turn == {"role": "assistant", "content": "refund"}


def test_dpo_pairs_the_human_action_against_the_proposal(traces: Traces) -> None:
    edited, denied = export("dpo")  # approvals carry no preference
    assert set(edited) == {"prompt", "chosen", "rejected", "tools"}
    assert edited["prompt"] == traces.edited.context["messages"]
    assert arguments(edited["chosen"][0])["reason"] == "ordered by mistake"
    assert arguments(edited["rejected"][0])["reason"] == "no longer needed"

    assert denied["prompt"] == traces.denied.context["messages"]
    [chosen] = denied["chosen"]
    assert chosen["role"] == "assistant" and "tool_calls" not in chosen
    assert DENY_REASON in chosen["content"] and "human colleague" in chosen["content"]
    [rejected] = denied["rejected"]
    assert rejected["tool_calls"][0]["function"]["name"] == "transfer_to_human_agents"


def test_dpo_skips_denials_without_a_proposal(traces: Traces) -> None:
    GoldenTrace.objects.filter(id=traces.denied.id).update(proposal=None)
    stats = exports.ExportStats()
    lines = list(
        exports.export_lines(GoldenTrace.objects.all(), exports.export_options(format="dpo"), stats=stats)
    )
    assert len(lines) == 1
    assert stats.skipped == {"no_proposal": 1}


def test_raw_has_every_column(traces: Traces) -> None:
    lines = export("raw")
    assert [line["decision"] for line in lines] == ["approve", "edit", "deny"]
    # Every column but ops' bad-decision flag: a flagged trace is never exported.
    columns = {f.attname for f in GoldenTrace._meta.concrete_fields if not f.name.startswith("flagged_bad")}
    assert set(lines[2]) == columns
    assert lines[2]["reason"] == DENY_REASON
    assert lines[2]["final_action"] is None
    assert lines[2]["request_id"] == str(traces.denied.request_id)
    assert lines[2]["context"] == traces.denied.context


def test_a_trace_flagged_as_a_bad_decision_is_not_exported(traces: Traces) -> None:
    GoldenTrace.objects.filter(id=traces.edited.id).update(
        flagged_bad_at=timezone.now(), flagged_bad_reason="the reviewer refunded the wrong order"
    )
    assert [line["decision"] for line in export("raw")] == ["approve", "deny"]


# --- Filters ---


def test_it_filters_by_since_tool_and_decision(traces: Traces) -> None:
    GoldenTrace.objects.filter(id=traces.approved.id).update(created_at=timezone.now() - timedelta(days=10))
    a_week_ago = (timezone.now() - timedelta(days=7)).date().isoformat()
    assert [line["decision"] for line in export("raw", since=a_week_ago)] == ["edit", "deny"]
    assert [line["decision"] for line in export("raw", tool="transfer_to_human_agents")] == ["deny"]
    assert [line["decision"] for line in export("raw", tool="cancel_pending_order")] == ["approve", "edit"]
    assert export("raw", tool="cancel") == []  # a tool name, not a substring of one
    assert [line["decision"] for line in export("raw", decision="edit")] == ["edit"]
    assert len(export("sft", decision="edit", tool="cancel_pending_order")) == 1
    assert export("sft", decision="deny") == []


def test_it_refuses_bad_options() -> None:
    bad_options: list[dict[str, Any]] = [{"format": "csv"}, {"decision": "maybe"}, {"since": "last tuesday"}]
    for bad in bad_options:
        with pytest.raises(ApplicationError) as exc:
            exports.export_options(**bad)
        assert exc.value.status == 422


# --- Redaction ---


def test_redaction_is_stable_within_an_export_and_removes_the_pii(traces: Traces) -> None:
    for format in ("sft", "dpo", "raw"):
        text = "\n".join(
            exports.export_lines(
                GoldenTrace.objects.all(), exports.export_options(format=format, redact=True)
            )
        )
        assert EMAIL not in text and "415-555-0134" not in text, format
        assert "<EMAIL_1>" in text and "<PHONE_1>" in text, format
        assert "<EMAIL_2>" not in text and "<PHONE_2>" not in text, format  # one value, one placeholder

    # Arguments inside the conversation are JSON text, and stay valid JSON once redacted.
    approved = export("sft", redact=True, decision="approve")[0]
    [lookup] = approved["messages"][1]["tool_calls"]
    assert json.loads(lookup["function"]["arguments"]) == {"email": "<EMAIL_1>"}
    assert approved["messages"][2]["content"] == "jane_doe_1234 (phone <PHONE_1>)"

    denied = export("raw", redact=True, decision="deny")[0]
    assert "<EMAIL_1>" in denied["context"]["messages"][0]["content"]
    assert "<EMAIL_1>" in denied["proposal"]["tool_calls"][0]["arguments"]["summary"]
    assert denied["reason"] == "check the order first; <EMAIL_1> already has an open ticket"
    # The tools are the developer's schemas: left as they are.
    assert denied["context"]["tools"] == traces.denied.context["tools"]


def test_the_redactor_gives_one_placeholder_per_value() -> None:
    redactor = Redactor()
    first = redactor.value("mail Jane.Doe@Example.com or call +1 415-555-0134")
    assert first == "mail <EMAIL_1> or call <PHONE_1>"
    assert redactor.value("jane.doe@example.com, bob@example.org") == "<EMAIL_1>, <EMAIL_2>"
    assert redactor.value({"to": ["bob@example.org"], "card": 4111111111111111, "n": 3}) == {
        "to": ["<EMAIL_2>"],
        "card": "<CARD_NUMBER_1>",
        "n": 3,
    }
    assert Redactor().value("bob@example.org") == "<EMAIL_1>"  # a new export starts again


# --- The command and its manifest ---


def test_the_command_writes_the_file_and_a_manifest_that_matches_it(traces: Traces, tmp_path: Path) -> None:
    out = tmp_path / "sft.jsonl"
    call_command("export_traces", "--format", "sft", "--redact", "--out", str(out), verbosity=0)
    data = out.read_bytes()
    manifest = json.loads((tmp_path / "sft.jsonl.manifest.json").read_text())
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["bytes"] == len(data)
    assert manifest["format_version"] == exports.FORMAT_VERSION
    assert manifest["format"] == "sft"
    assert manifest["filters"] == {"since": None, "tool": None, "decision": None, "redact": True}
    assert manifest["counts"]["written"] == {"approve": 1, "edit": 1, "deny": 0}
    assert manifest["lines"] == len(data.splitlines()) == 2
    assert manifest["placeholders"] == {"email": 1, "phone": 1}
    assert not (tmp_path / "sft.jsonl.partial").exists()


def test_the_command_reports_bad_options(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="since"):
        call_command("export_traces", "--since", "yesterday-ish", "--out", str(tmp_path / "x.jsonl"))


def test_datasets_loads_the_sft_and_dpo_files(traces: Traces, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    for format, rows in (("sft", 2), ("dpo", 2)):
        out = tmp_path / f"{format}.jsonl"
        call_command("export_traces", "--format", format, "--out", str(out), verbosity=0)
        loaded = datasets.load_dataset(
            "json", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf-cache")
        )
        assert loaded.num_rows == rows
        if format == "sft":
            assert loaded.column_names == ["messages", "tools"]
            assert loaded[1]["messages"][-1]["tool_calls"][0]["function"]["name"] == "cancel_pending_order"
        else:
            assert loaded.column_names == ["prompt", "chosen", "rejected", "tools"]
            assert "human colleague" in loaded[1]["chosen"][0]["content"]


# --- The API ---


@pytest.fixture
def ops_key(db: Any) -> str:
    return agent_keys.agent_key_create(name="trainer", scope=AgentKey.Scope.OPS)[1]


def test_the_api_streams_jsonl_to_an_ops_key(client: Client, traces: Traces, ops_key: str) -> None:
    response = client.get(
        "/api/v1/traces/export",
        {"format": "dpo", "redact": "true"},
        headers={"Authorization": f"Bearer {ops_key}"},
    )
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "application/x-ndjson"
    assert "attachment" in response["Content-Disposition"]
    text = streamed(response).decode()
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 2 and set(lines[0]) == {"prompt", "chosen", "rejected", "tools"}
    assert EMAIL not in text


def test_the_api_applies_filters_and_validates_them(client: Client, traces: Traces, ops_key: str) -> None:
    auth = {"Authorization": f"Bearer {ops_key}"}
    response = client.get("/api/v1/traces/export", {"format": "raw", "decision": "deny"}, headers=auth)
    [line] = streamed(response).decode().splitlines()
    assert json.loads(line)["id"] == traces.denied.id
    response = client.get("/api/v1/traces/export", {"since": "not a date"}, headers=auth)
    assert response.status_code == 422 and response.json()["code"] == "invalid_request"
    response = client.get("/api/v1/traces/export", {"format": "csv"}, headers=auth)
    assert response.status_code == 422


def test_the_api_refuses_an_agent_key_and_no_key(client: Client, agent: Any) -> None:
    refused: list[dict[str, str]] = [
        {"Authorization": f"Bearer {agent[1]}"},
        {},
        {"Authorization": "Bearer nope"},
    ]
    for headers in refused:
        response = client.get("/api/v1/traces/export", headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"
        assert "ops key" in response.json()["message"]


def test_the_api_streams_under_asgi_without_buffering(traces: Traces, ops_key: str) -> None:
    async def fetch() -> tuple[int, Any, list[bytes]]:
        response: Any = await AsyncClient().get(
            "/api/v1/traces/export", {"format": "sft"}, headers={"Authorization": f"Bearer {ops_key}"}
        )
        # An async iterator: Django would otherwise drain the export into a list first.
        assert response.is_async
        return response.status_code, response["Content-Type"], [c async for c in response.streaming_content]

    status, content_type, chunks = async_to_sync(fetch)()
    assert (status, content_type) == (200, "application/x-ndjson")
    assert len(b"".join(chunks).decode().splitlines()) == 2


# --- The admin action ---


def test_the_admin_action_downloads_the_selection(client: Client, traces: Traces) -> None:
    admin_user = User.objects.create_superuser("root", password="pw-root")
    client.force_login(admin_user)
    for action, expected in (("export_selected_traces", 2), ("export_selected_traces_dpo", 1)):
        response = client.post(
            "/admin/reviewq/goldentrace/",
            {"action": action, "_selected_action": [traces.edited.id, traces.approved.id]},
        )
        assert response.status_code == 200
        assert "attachment" in response["Content-Disposition"]
        lines = streamed(response).decode().splitlines()
        assert len(lines) == expected
    response = client.post(
        "/admin/reviewq/goldentrace/",
        {"action": "export_selected_traces_raw", "_selected_action": [traces.denied.id]},
    )
    [line] = streamed(response).decode().splitlines()
    assert json.loads(line)["decision"] == "deny"


def test_ops_flag_a_bad_decision_in_the_admin_with_a_reason(client: Client, traces: Traces) -> None:
    client.force_login(User.objects.create_superuser("root", password="pw-root"))
    selection = {"action": "flag_bad", "_selected_action": [traces.edited.id]}
    confirm = client.post("/admin/reviewq/goldentrace/", selection)
    assert confirm.status_code == 200 and "Flag golden traces as bad decisions" in confirm.content.decode()
    assert client.post("/admin/reviewq/goldentrace/", {**selection, "reason": " "}).status_code == 200
    assert not GoldenTrace.objects.filter(flagged_bad_at__isnull=False).exists()  # a reason is required
    done = client.post("/admin/reviewq/goldentrace/", {**selection, "reason": "refunded the wrong order"})
    assert done.status_code == 302
    traces.edited.refresh_from_db()
    assert traces.edited.flagged_bad and traces.edited.flagged_bad_reason == "refunded the wrong order"
    assert [line["decision"] for line in export("raw")] == ["approve", "deny"]
    flagged = client.get("/admin/reviewq/goldentrace/?flagged_bad=yes").content.decode()
    assert "refunded the wrong order" in flagged
    client.post("/admin/reviewq/goldentrace/", {"action": "unflag", "_selected_action": [traces.edited.id]})
    assert [line["decision"] for line in export("raw")] == ["approve", "edit", "deny"]


def test_admin_names_are_plural_english(client: Client, db: Any) -> None:
    client.force_login(User.objects.create_superuser("root", password="pw-root"))
    index = client.get("/admin/").content.decode()
    assert "Escalation policies" in index and "Webhook deliveries" in index and "Risk policies" in index
    assert "policys" not in index.lower() and "deliverys" not in index.lower()


def test_the_redactor_replaces_street_addresses_but_not_names_of_places() -> None:
    """What --redact covers (README, "Training data export"): a street address written with its
    number and street type is replaced; a town or a person's name, which has no shape, is not."""
    redactor = Redactor()
    text = "Send it to 98 Elm Street, Springfield, for Jane Doe; or 1200 N. Lake Shore Dr, Apt 4B."
    assert redactor.value(text) == (
        "Send it to <STREET_ADDRESS_1>, Springfield, for Jane Doe; or <STREET_ADDRESS_2>."
    )

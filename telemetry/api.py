"""The ops API for traces: golden traces as a streamed JSONL export for training or analysis, and a
team's own LLM logs imported as upstream calls."""

from __future__ import annotations

from typing import Any, Literal

from django.http import HttpRequest, StreamingHttpResponse
from ninja import Query, Router, Schema
from ninja.security import HttpBearer

from reviewq.errors import ApplicationError
from reviewq.models import AgentKey, GoldenTrace
from reviewq.schemas import ErrorOut
from reviewq.services.agent_keys import agent_key_authenticate
from telemetry import exports, imports
from telemetry.downloads import export_filename, jsonl_response


class OpsKeyAuth(HttpBearer):
    """Only ops keys: traces hold every agent's conversations, so an agent key is refused."""

    def __call__(self, request: HttpRequest) -> Any:
        key = super().__call__(request)
        if key is None:
            # The project's 401 shape, with a message that names the key this endpoint wants.
            raise ApplicationError(
                "unauthorized", "send a valid ops key as 'Authorization: Bearer <key>'", status=401
            )
        return key

    def authenticate(self, request: HttpRequest, token: str) -> AgentKey | None:
        return agent_key_authenticate(token, scope=AgentKey.Scope.OPS)


router = Router(tags=["traces"])


@router.get("/export", auth=OpsKeyAuth(), response={401: ErrorOut, 422: ErrorOut})
def export_traces(
    request: HttpRequest,
    format_: Literal["sft", "dpo", "raw"] = Query("sft", alias="format"),
    since: str | None = Query(None, description="ISO date or datetime; traces decided at or after it"),
    tool: str | None = Query(None, description="only traces whose proposal or final action calls it"),
    decision: Literal["approve", "edit", "deny"] | None = None,
    redact: bool = Query(False, description="replace detected PII with placeholders like <EMAIL_1>"),
) -> StreamingHttpResponse:
    """Golden traces as streamed JSONL (application/x-ndjson); see telemetry/exports.py for the formats."""
    options = exports.export_options(format=format_, since=since, tool=tool, decision=decision, redact=redact)
    lines = exports.export_lines(GoldenTrace.objects.all(), options)
    return jsonl_response(request, lines, filename=export_filename(options))


class ImportOut(Schema):
    lines: int
    imported: int
    duplicates: int
    skipped: dict[str, int]
    errors: list[dict[str, Any]]


@router.post("/import", auth=OpsKeyAuth(), response={200: ImportOut, 401: ErrorOut, 422: ErrorOut})
def import_traces(
    request: HttpRequest,
    all_or_nothing: bool = Query(False, description="import nothing if any line is invalid"),
) -> dict[str, Any]:
    """Imports a team's LLM logs: the body is JSONL (application/x-ndjson), one OpenAI chat-format
    conversation per line whose last message is the LLM's answer, stored as upstream calls once
    each (see telemetry/imports.py). Files above the upload limit: ``manage.py import_traces``."""
    return imports.import_traces(request.body.splitlines(), all_or_nothing=all_or_nothing).as_dict()

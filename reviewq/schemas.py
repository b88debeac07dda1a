"""The agent API's typed shapes: OpenAI chat messages and function tools in, a request out."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal
from uuid import UUID

from django.conf import settings
from ninja import Schema
from pydantic import Field, HttpUrl, UrlConstraints, field_validator, model_validator

from router.contracts import REQUEST_TASK_TYPES, TaskType
from router.prompts import MAX_PLAN_CALLS

TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


def _wait_is_bounded(value: int) -> int:
    if value > settings.MAX_WAIT_MS:
        raise ValueError(f"wait_ms may be at most {settings.MAX_WAIT_MS}")
    return value


class ContentPart(Schema):
    type: str
    text: str | None = None


class FunctionCall(Schema):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    arguments: str = Field(description="The arguments as a JSON-encoded object, as in OpenAI's format.")

    @field_validator("arguments")
    @classmethod
    def arguments_are_a_json_object(cls, value: str) -> str:
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"arguments must be a JSON-encoded object: {exc.msg}") from None
        if not isinstance(decoded, dict):
            raise ValueError("arguments must be a JSON-encoded object")
        return value


class ToolCall(Schema):
    id: str = Field(min_length=1, max_length=128)
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(Schema):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def check_role_fields(self) -> Message:
        if self.role == "tool" and (not self.tool_call_id or self.content is None):
            raise ValueError("a tool message needs tool_call_id and content")
        if self.role == "assistant" and self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs content or tool_calls")
        if self.role in ("system", "developer", "user") and self.content is None:
            raise ValueError(f"a {self.role} message needs content")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self


class FunctionDefinition(Schema):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class Tool(Schema):
    type: Literal["function"]
    function: FunctionDefinition


class ProposedAction(Schema):
    """The agent's own next step, as its LLM proposed it (an OpenAI assistant message's parts):
    tool calls, or a reply. reviewq's models are skipped; validators and policies still apply."""

    tool_calls: list[ToolCall] | None = Field(default=None, min_length=1, max_length=MAX_PLAN_CALLS)
    content: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def one_kind(self) -> ProposedAction:
        if (self.tool_calls is None) == (self.content is None):
            raise ValueError("a proposed_action holds either tool_calls or content")
        return self


class RequestIn(Schema):
    messages: list[Message] = Field(min_length=1)
    tools: list[Tool] = Field(default_factory=list, max_length=128)
    task_type: TaskType | None = Field(
        default=None, description="tool_use, extraction, classification or respond (default: from the shape)"
    )
    response_schema: dict[str, Any] | None = Field(
        default=None, description="extraction: the answer is JSON valid against this schema"
    )
    labels: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        default=None, description="classification: the answer is one of these labels"
    )
    format: Literal["json", "yaml"] = Field(default="json", description="extraction: also return YAML text")
    parallel_tool_calls: bool = Field(default=False, description="tool_use: allow a plan of several calls")
    tool_choice: Literal["auto", "required"] = Field(
        default="required", description="tool_use: 'auto' lets the model reply instead of calling a tool"
    )
    proposed_action: ProposedAction | None = Field(
        default=None,
        description="The call (or reply) the agent's own LLM proposed: reviewq's models are skipped, "
        "and the validators, risk policies and review queue decide on it.",
    )
    wait_ms: int = Field(default=0, ge=0, description="Wait up to this long for a final answer, else 202.")
    callback_url: Annotated[HttpUrl, UrlConstraints(max_length=500)] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    _wait_bounded = field_validator("wait_ms")(_wait_is_bounded)

    @field_validator("task_type")
    @classmethod
    def task_type_is_an_agents(cls, value: TaskType | None) -> TaskType | None:
        if value is not None and value not in REQUEST_TASK_TYPES:
            raise ValueError(f"task_type must be one of {', '.join(REQUEST_TASK_TYPES)}")
        return value

    @field_validator("labels")
    @classmethod
    def labels_are_distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("labels must hold at least one label")
            if len(set(value)) != len(value):
                raise ValueError("labels must be distinct")
        return value

    @model_validator(mode="after")
    def task_type_fits_the_request(self) -> RequestIn:
        if self.task_type == TaskType.TOOL_USE and not self.tools:
            raise ValueError("task_type tool_use needs at least one tool")
        if self.task_type == TaskType.EXTRACTION and self.response_schema is None:
            raise ValueError("task_type extraction needs a response_schema")
        if self.task_type == TaskType.CLASSIFICATION and not self.labels:
            raise ValueError("task_type classification needs labels")
        return self

    def payload(self) -> dict[str, Any]:
        """The request as stored and hashed for idempotency (wait_ms is transport, not content)."""
        data = self.model_dump(mode="json", exclude_none=True, exclude={"wait_ms"})
        if data.get("tool_choice") == "required":
            del data["tool_choice"]  # the default: bodies hash as they did before the field existed
        return data


class WaitQuery(Schema):
    wait_ms: int = Field(default=0, ge=0, description="Wait up to this long for a final answer (long poll).")
    until: Literal["final", "held"] = Field(
        default="final", description="held: answer as soon as the request awaits a reviewer, or is final"
    )

    _bounded = field_validator("wait_ms")(_wait_is_bounded)


class CancelIn(Schema):
    reason: str = Field(default="", max_length=500, description="Why the agent withdrew the request.")


class RequestOut(Schema):
    id: UUID
    status: str
    action: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None


class ErrorOut(Schema):
    code: str
    message: str
    issues: list[dict[str, str]] | None = Field(
        default=None,
        description="invalid_proposed_action: the validators' findings (validator, path, message)",
    )


class ChatCompletionIn(Schema):
    """OpenAI's Chat Completions request, as far as reviewq reads it; other fields (temperature,
    max_tokens, ...) are accepted, forwarded upstream in observe mode and ignored otherwise."""

    model: str = Field(default="", max_length=200)
    messages: list[Message] = Field(min_length=1)
    tools: list[Tool] = Field(default_factory=list, max_length=128)
    tool_choice: Literal["auto", "required", "none"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    stream: bool = False
    n: int | None = Field(default=None, ge=1)

"""What every model backend offers the pipeline: a JSON answer constrained by a schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from router.contracts import TaskType
from router.uncertainty import Uncertainty, uncertainty_of


@dataclass(frozen=True)
class Prompt:
    """A model-agnostic prompt.

    ``system`` comes first and holds everything stable for a given tool set (instructions and
    the tool list), so local backends can reuse its cached prefix across requests.
    ``conversation`` is the agent's OpenAI-format message list, as sent. ``feedback`` holds the
    errors of earlier attempts and goes last.

    The answer is JSON text matching ``output_schema``, whatever the backend: for ``tool_use``
    ``{"name", "arguments"}`` (or ``{"calls": [...]}`` of those when ``parallel_tool_calls``),
    for ``extraction`` the extracted object, for ``classification`` ``{"label"}``, for
    ``respond`` ``{"content"}``. Backends with native tool use (Anthropic, a model with a tool
    template such as Qwen's) get the agent's OpenAI ``tools`` too, with ``instructions`` (the
    system text without the tool list), and translate their answer back into that JSON.
    """

    system: str
    conversation: list[dict[str, Any]]
    output_schema: dict[str, Any]
    feedback: str = ""
    max_tokens: int = 256
    task_type: str = TaskType.TOOL_USE
    tools: list[dict[str, Any]] = field(default_factory=list)
    parallel_tool_calls: bool = False
    # tool_use: the answer may be a reply (``{"content"}``) instead of a call.
    may_reply: bool = False
    # ``system`` without the tool list: for a model whose chat template lists the tools itself.
    instructions: str = ""


@dataclass
class Generation:
    """One model answer, with what telemetry needs to know about it."""

    text: str
    tokens_in: int
    tokens_out: int
    latency_ms: float
    # Log-probabilities of the chosen tokens that carried a choice (not forced by the grammar),
    # each over the alternatives the grammar allowed there.
    decision_logprobs: list[float] = field(default_factory=list)
    prompt_text: str = ""
    # For the same tokens (where the backend knows it): how far the chosen token's
    # log-probability was above the runner-up's.
    decision_margins: list[float] = field(default_factory=list)

    @cached_property
    def uncertainty(self) -> Uncertainty | None:
        """How unsure the model was (None without log-probabilities); computed once per answer."""
        return uncertainty_of(self.decision_logprobs, self.decision_margins)


class BackendError(Exception):
    """The model could not be called (missing file, server down, timeout): not a bad answer."""


class ModelBackend(Protocol):
    def generate(self, prompt: Prompt) -> Generation: ...

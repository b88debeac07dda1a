"""What every model backend offers the pipeline: a JSON answer constrained by a schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Prompt:
    """A model-agnostic prompt.

    ``system`` comes first and holds everything stable for a given tool set (instructions and
    the tool list), so local backends can reuse its cached prefix across requests.
    ``conversation`` is the agent's OpenAI-format message list, as sent. ``feedback`` holds the
    errors of earlier attempts and goes last. The answer must be JSON matching ``output_schema``.
    """

    system: str
    conversation: list[dict[str, Any]]
    output_schema: dict[str, Any]
    feedback: str = ""
    max_tokens: int = 256


@dataclass
class Generation:
    """One model answer, with what telemetry needs to know about it."""

    text: str
    tokens_in: int
    tokens_out: int
    latency_ms: float
    # Log-probabilities of the sampled tokens that carried a choice (not forced by the grammar).
    decision_logprobs: list[float] = field(default_factory=list)
    prompt_text: str = ""


class BackendError(Exception):
    """The model could not be called (missing file, server down, timeout): not a bad answer."""


class ModelBackend(Protocol):
    def generate(self, prompt: Prompt) -> Generation: ...

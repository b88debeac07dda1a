"""The router's vocabulary, one enum per contract: model tiers, task types, escalation triggers,
and how a small model's answer compares with an upstream LLM's.

Stored in rows (``ModelSpec.tier``, ``ModelCall.trigger``, ``EscalationPolicy.task_type``),
sent by agents (``task_type``) and matched by policies, so each value is spelled in one place.
"""

from __future__ import annotations

from django.db import models


class Tier(models.TextChoices):
    """How big the model is: the ladder climbs from the small tier to the large one."""

    SLM = "slm", "Small language model"
    LLM = "llm", "Large language model"


class TaskType(models.TextChoices):
    """What a request asks of a model; also a strength a ModelSpec declares.

    The first four are what agents ask for; ``adjudication`` is the pipeline's own check of a
    proposal by a second model.
    """

    TOOL_USE = "tool_use"
    EXTRACTION = "extraction"
    CLASSIFICATION = "classification"
    RESPOND = "respond"
    ADJUDICATION = "adjudication"


# Task types an agent may ask for (``adjudication`` is internal).
REQUEST_TASK_TYPES = (TaskType.TOOL_USE, TaskType.EXTRACTION, TaskType.CLASSIFICATION, TaskType.RESPOND)


class Trigger(models.TextChoices):
    """Why a request climbed the ladder, stored on the ModelCall that caused the next step.

    The first five can be switched off per task type (``EscalationPolicy.trigger_enabled``);
    the last two always climb, since no other rung of the ladder could help otherwise.
    """

    VALIDATION_FAILED = "validation_failed"
    UNCERTAINTY = "uncertainty"
    OUT_OF_SCOPE = "out_of_scope"
    CONTEXT_TOO_LONG = "context_too_long"
    POLICY_REQUIRES_LLM = "policy_requires_llm"
    NO_SLM = "no_slm"
    BACKEND_ERROR = "backend_error"


class Agreement(models.TextChoices):
    """How the small model's answer compares with the upstream LLM's on the same input."""

    AGREES = "agrees", "same tool and arguments (or both replied)"
    OTHER_ARGUMENTS = "other_arguments", "same tool, other arguments"
    OTHER_TOOL = "other_tool", "another tool, or a reply instead of a call"
    NO_ANSWER = "no_answer", "no valid answer from the small model"

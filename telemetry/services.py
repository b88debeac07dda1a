"""Writes to the model-call log."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from router.backends.base import Generation
from router.json_tree import UNSTORABLE
from router.models import ModelSpec
from router.validators import ValidationIssue, issues_as_dicts
from telemetry.models import ModelCall


def _storable(text: str) -> str:
    """A model's text as a column can hold it: characters no column takes become U+FFFD."""
    return UNSTORABLE.sub("\ufffd", text)


def model_call_record(
    *,
    request_id: Any,
    spec: ModelSpec,
    purpose: str,
    attempt: int,
    generation: Generation | None = None,
    parsed_output: Any = None,
    issues: list[ValidationIssue] | None = None,
    error: str = "",
    trigger: str = "",
    escalated: bool = False,
) -> ModelCall:
    """Stores one model call with its cost at the registry's prices."""
    tokens_in = generation.tokens_in if generation else 0
    tokens_out = generation.tokens_out if generation else 0
    return ModelCall.objects.create(
        request_id=request_id,
        model_spec=spec,
        model_name=spec.name,
        tier=spec.tier,
        purpose=purpose,
        attempt=attempt,
        prompt=_storable(generation.prompt_text) if generation else "",
        raw_output=_storable(generation.text) if generation else "",
        parsed_output=parsed_output,
        latency_ms=generation.latency_ms if generation else 0,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=spec.cost_usd(tokens_in, tokens_out) if generation else Decimal(0),
        validation_errors=issues_as_dicts(issues or []),
        uncertainty=generation.uncertainty.as_dict() if generation and generation.uncertainty else None,
        error=_storable(error),
        escalated=escalated,
        trigger=trigger,
    )

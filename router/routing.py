"""The front door: which task this is, and which model should do it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from router.models import ModelSpec


class NoModelAvailable(Exception):
    def __init__(self, message: str, *, context_too_long: bool = False) -> None:
        super().__init__(message)
        self.context_too_long = context_too_long


@dataclass(frozen=True)
class Route:
    task_type: str
    model: ModelSpec
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"task_type": self.task_type, "model": self.model.name, "reason": self.reason}


def choose_model(
    task_type: str, *, prompt_tokens: int, tier: str = "slm", models: Iterable[ModelSpec] | None = None
) -> Route:
    """The cheapest enabled model of ``tier`` with the strength ``task_type`` whose context fits.

    Among ``models`` when given (a cached registry), else the registry as stored.
    """
    if models is None:
        models = ModelSpec.objects.filter(enabled=True, tier=tier)
    candidates = [
        spec for spec in models if spec.enabled and spec.tier == tier and task_type in (spec.strengths or [])
    ]
    if not candidates:
        raise NoModelAvailable(f"no enabled {tier} model has the strength {str(task_type)!r}")
    fitting = [spec for spec in candidates if spec.context_size >= prompt_tokens]
    if not fitting:
        raise NoModelAvailable(
            f"the prompt needs about {prompt_tokens} tokens, more than any {tier} model's context",
            context_too_long=True,
        )
    chosen = min(fitting, key=lambda s: (s.price_input_per_mtok + s.price_output_per_mtok, s.name))
    reason = (
        f"cheapest enabled {tier} model with strength {str(task_type)!r} "
        f"whose context ({chosen.context_size}) fits ~{prompt_tokens} tokens, of {len(candidates)}"
    )
    return Route(task_type=task_type, model=chosen, reason=reason)

"""The front door: which task this is, and which models should do it, cheapest first."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from router.contracts import Tier
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
    # A promoted adapter for the request's task cluster, served over ``model`` (router/training.py).
    adapter_name: str = ""
    adapter_path: str = ""
    adapter_threshold: float | None = None

    @property
    def model_name(self) -> str:
        """What answered: the model, or the adapter over it."""
        return self.adapter_name or self.model.name

    def as_dict(self) -> dict[str, str]:
        route = {"task_type": self.task_type, "model": self.model_name, "reason": self.reason}
        return {**route, "base": self.model.name} if self.adapter_name else route


def _price(spec: ModelSpec) -> tuple[object, str]:
    return (spec.price_input_per_mtok + spec.price_output_per_mtok, spec.name)


def rungs(
    task_type: str,
    *,
    prompt_tokens: int,
    tools: int = 0,
    parallel: bool = False,
    tier: str = Tier.SLM,
    models: Iterable[ModelSpec] | None = None,
    floor_tokens: int | None = None,
) -> list[Route]:
    """Every enabled model of ``tier`` with the strength ``task_type`` that serves a request of
    this shape (its context fits the prompt, and it was measured competent for this many prompt
    tokens and tools), cheapest first: the ladder's rungs of that tier. Raises NoModelAvailable.

    ``floor_tokens``: what the prompt comes down to under a context budget
    (router/context_budget.py), when the caller cuts the conversation to the model's context; a
    model whose context holds the floor then serves a longer prompt at its full context.
    Among ``models`` when given (a cached registry), else the registry as stored.
    """
    floor = prompt_tokens if floor_tokens is None else min(floor_tokens, prompt_tokens)
    if models is None:
        models = ModelSpec.objects.filter(enabled=True, tier=tier)
    candidates = [
        spec for spec in models if spec.enabled and spec.tier == tier and task_type in (spec.strengths or [])
    ]
    if not candidates:
        raise NoModelAvailable(f"no enabled {tier} model has the strength {str(task_type)!r}")
    if not any(spec.context_size >= floor for spec in candidates):
        raise NoModelAvailable(
            f"the prompt needs about {prompt_tokens} tokens, more than any {tier} model's context",
            context_too_long=True,
        )
    serving = sorted(
        (
            spec
            for spec in candidates
            if spec.context_size >= floor
            and spec.serves(
                prompt_tokens=min(prompt_tokens, spec.context_size), tools=tools, parallel=parallel
            )
        ),
        key=_price,
    )
    if not serving:
        raise NoModelAvailable(
            f"no {tier} model with the strength {str(task_type)!r} is competent for ~{prompt_tokens} tokens "
            f"and {tools} tools{' with parallel calls' if parallel else ''}"
        )
    return [
        Route(
            task_type=task_type,
            model=spec,
            reason=(
                f"rung {index + 1} of {len(serving)}, cheapest first, of the enabled {tier} models with "
                f"strength {str(task_type)!r} that serve ~{prompt_tokens} tokens and {tools} tools"
            ),
        )
        for index, spec in enumerate(serving)
    ]


def choose_model(
    task_type: str,
    *,
    prompt_tokens: int,
    tools: int = 0,
    tier: str = Tier.SLM,
    models: Iterable[ModelSpec] | None = None,
) -> Route:
    """The cheapest of ``rungs``: the model that gets the request first."""
    return rungs(task_type, prompt_tokens=prompt_tokens, tools=tools, tier=tier, models=models)[0]

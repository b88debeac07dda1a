"""The learning loop's steps after the dataset: train an adapter, replay it, promote, roll back,
and the cycle that repeats them.

- ``train``: a LoRA adapter for a small model's GGUF base from a dataset's train split (one
  cluster's rows, or all), stored under DATA_DIR/adapters/ as a candidate (router/training.py).
- ``replay``: the candidate in llama.cpp, the runtime that will serve it, beside the model as it
  serves today (its promoted adapter, if any) on the dataset's replay rows (never trained on):
  exact match of tool and arguments, schema-valid and validator pass rates, per-cluster
  accuracy, latency, and how well its uncertainty separates right from wrong (AUROC, ECE, the
  threshold that keeps released precision at the target).
- ``promote``: refused when the candidate is worse than what serves now on any cluster of the
  replay, unless ops override with a reason; then the router serves base + adapter with the
  calibrated threshold as the rung's uncertainty fallback. ``rollback`` restores what promotion
  replaced.
- ``learning_cycle``: when enough new trustworthy traces arrived, a fresh dataset, a trained and
  replayed candidate, promoted on a clear win where ops allow it (scheduled, off by default).
Every change is in the audit log.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from reviewq import audit
from reviewq.errors import ApplicationError
from reviewq.models import Request, RequestStatus
from reviewq.pipeline.run import task_spec_for
from router import calibration
from router.answers import parse_answer
from router.backends.base import BackendError
from router.backends.registry import get_adapter_backend
from router.contracts import Agreement, TaskType, Tier
from router.model_files import resolve_model_path
from router.models import Adapter, ModelSpec
from router.openai_actions import action_from_message, action_of_answer, compare_answers
from router.prompts import TaskSpec, build_prompt
from router.training import TrainingConfig, read_rows, train_adapter
from telemetry.datasets import DatasetOptions, build_dataset, trustworthy_traces_since
from telemetry.models import Dataset, ModelCall, TaskCluster
from telemetry.services import model_call_record

SCHEMA_VALIDATORS = frozenset({"json", "schema"})


def _rows(dataset: Dataset, split: str, cluster: str) -> list[dict[str, Any]]:
    rows = read_rows(Path(dataset.path) / f"{split}.jsonl")
    return [row for row in rows if not cluster or row["meta"].get("cluster") == cluster]


def _base(name: str) -> ModelSpec:
    spec = ModelSpec.objects.filter(name=name).first()
    if spec is None or spec.backend != ModelSpec.Backend.LLAMA_CPP:
        raise ApplicationError(
            "invalid_base", f"{name!r} is not a llama.cpp model in the registry", status=422
        )
    return spec


def train(
    *,
    base: str,
    dataset: Dataset,
    cluster: str = "",
    config: TrainingConfig | None = None,
    actor: str = "system",
    progress: Callable[[int, float], Any] | None = None,
) -> Adapter:
    """Trains a candidate adapter for ``base`` on ``dataset``'s train rows (``cluster``'s, or all)."""
    spec = _base(base)
    rows = _rows(dataset, "train", cluster)
    if not rows:
        raise ApplicationError("no_rows", f"dataset v{dataset.version} has no train rows for this cluster")
    config = config or TrainingConfig()
    name = f"{spec.name}-{cluster[:8] or 'all'}-v{dataset.version}-{timezone.now():%Y%m%d%H%M%S}"
    path = Path(settings.DATA_DIR) / "adapters" / f"{name}.gguf"
    result = train_adapter(resolve_model_path(spec.model_path), rows, path, config, progress=progress)
    adapter = Adapter.objects.create(
        name=name,
        base=spec,
        path=str(path),
        cluster=cluster,
        dataset_version=dataset.version,
        dataset_sha256=dataset.sha256,
        hyperparameters={**config.as_dict(), "trainable_parameters": result.trainable_parameters},
        losses=result.losses,
        train_seconds=result.seconds,
        rows_used=result.rows_used,
        size_bytes=result.size_bytes,
    )
    audit.record(kind="adapter.trained", actor=actor, adapter=name, base=spec.name, dataset=dataset.version)
    return adapter


def _task(row: dict[str, Any]) -> tuple[TaskSpec, dict[str, Any]]:
    *conversation, final = row["messages"]
    expected = action_from_message(final)
    tools = row.get("tools") or []
    task = TaskSpec(
        task_type=TaskType.TOOL_USE if tools else TaskType.RESPOND,
        messages=conversation,
        tools=tools,
        parallel_tool_calls=len(expected.get("tool_calls") or []) > 1,
        may_reply=bool(tools) and expected.get("type") == "respond",
    )
    return task, expected


def evaluate(backend: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One model's answers on ``rows``: exact, valid, schema-valid, uncertainty, latency."""
    results = []
    for row in rows:
        task, expected = _task(row)
        started = time.perf_counter()
        try:
            generation = backend.generate(build_prompt(task))
        except BackendError as exc:
            results.append({"cluster": row["meta"].get("cluster", ""), "error": str(exc), "exact": False})
            continue
        _, action, issues = parse_answer(task, generation.text)
        results.append(
            {
                "cluster": row["meta"].get("cluster", ""),
                "exact": action is not None and compare_answers(expected, action) == Agreement.AGREES,
                "valid": action is not None,
                "schema_valid": not any(issue.validator in SCHEMA_VALIDATORS for issue in issues),
                "score": generation.uncertainty.score if generation.uncertainty else None,
                "latency_ms": (time.perf_counter() - started) * 1000,
            }
        )
    return results


def summarise(results: list[dict[str, Any]], precision: float) -> dict[str, Any]:
    """The replay figures of one model over its results."""
    n = len(results) or 1
    scored = [r for r in results if r.get("score") is not None]
    right = [r["score"] for r in scored if r["exact"]]
    wrong = [r["score"] for r in scored if not r["exact"]]
    clusters: dict[str, list[bool]] = defaultdict(list)
    for r in results:
        clusters[r["cluster"]].append(r["exact"])
    latencies = [r["latency_ms"] for r in results if "latency_ms" in r]
    return {
        "rows": len(results),
        "exact": sum(r["exact"] for r in results) / n,
        "valid": sum(bool(r.get("valid")) for r in results) / n,
        "schema_valid": sum(bool(r.get("schema_valid")) for r in results) / n,
        "latency_ms_p50": statistics.median(latencies) if latencies else None,
        "clusters": {key: sum(values) / len(values) for key, values in clusters.items()},
        "auroc": calibration.auroc(right, wrong),
        "ece": calibration.expected_calibration_error(
            [r["score"] for r in scored], [r["exact"] for r in scored]
        ),
        "threshold": calibration.release_threshold(
            [r["score"] for r in scored], [r["exact"] for r in scored], precision
        ),
    }


def replay(adapter: Adapter, *, limit: int | None = None, actor: str = "system") -> dict[str, Any]:
    """Runs the candidate and its base on the dataset's replay rows and stores the report."""
    dataset = Dataset.objects.filter(version=adapter.dataset_version).first()
    if dataset is None or dataset.sha256 != adapter.dataset_sha256:
        raise ApplicationError("no_dataset", f"dataset v{adapter.dataset_version} is gone or changed")
    rows = _rows(dataset, "replay", adapter.cluster)[:limit]
    if not rows:
        raise ApplicationError("no_rows", f"dataset v{dataset.version} has no replay rows for this adapter")
    # Loaded here, not at import: the web process imports this module (the admin) and otherwise
    # never loads llama.cpp (see router/backends/registry.py).
    from router.backends.llama_cpp import LlamaCppBackend

    path = resolve_model_path(adapter.base.model_path)
    context = adapter.base.context_size
    precision = settings.ADAPTER_RELEASE_PRECISION
    served_by, served_lora = served_now(adapter)
    base = summarise(evaluate(LlamaCppBackend(path, n_ctx=context, lora_path=served_lora), rows), precision)
    candidate = summarise(
        evaluate(LlamaCppBackend(path, n_ctx=context, lora_path=adapter.path), rows), precision
    )
    # "base" is the model as it serves these rows today: its promoted adapter when it has one.
    report = {
        "rows": len(rows),
        "precision_target": precision,
        "served_by": served_by,
        "base": base,
        "candidate": candidate,
    }
    Adapter.objects.filter(id=adapter.id).update(
        replay_report=report, calibrated_threshold=candidate["threshold"]
    )
    audit.record(kind="adapter.replayed", actor=actor, adapter=adapter.name, exact=candidate["exact"])
    return report


def served_now(adapter: Adapter) -> tuple[str, str | None]:
    """What answers ``adapter``'s traffic today, beside which it is replayed: the promoted adapter
    of its cluster, else the one over all its base's traffic, else the bare base. (name, LoRA path)."""
    promoted = Adapter.objects.filter(base_id=adapter.base_id, status=Adapter.Status.PROMOTED)
    current = promoted.filter(cluster=adapter.cluster).first() if adapter.cluster else None
    current = current or promoted.filter(cluster="").first()
    if current is None or current.id == adapter.id:
        return adapter.base.name, None
    return current.name, current.path


def worse_clusters(report: dict[str, Any]) -> list[str]:
    """The replay's clusters where the candidate is less often exact than what serves now."""
    base, candidate = report["base"]["clusters"], report["candidate"]["clusters"]
    return sorted(key for key, accuracy in candidate.items() if accuracy < base.get(key, 0.0))


def promote(adapter: Adapter, *, actor: str, override_reason: str = "") -> Adapter:
    """Serves ``adapter`` over its base (see the module docstring for when it is refused)."""
    if adapter.status not in (Adapter.Status.CANDIDATE, Adapter.Status.SHADOW):
        raise ApplicationError("invalid_status", f"adapter {adapter.name} is {adapter.status}", status=409)
    if adapter.replay_report is None:
        raise ApplicationError(
            "not_replayed", "replay the adapter on held-out rows before promoting it", status=409
        )
    worse = worse_clusters(adapter.replay_report)
    if worse and not override_reason.strip():
        served_by = adapter.replay_report.get("served_by") or adapter.base.name
        than = "the base" if served_by == adapter.base.name else f"{served_by}, which serves now,"
        raise ApplicationError(
            "worse_than_base",
            f"the candidate is worse than {than} on {len(worse)} cluster(s): "
            f"{', '.join(k[:12] for k in worse)}; "
            "promote with a reason to override",
            status=409,
        )
    if adapter.cluster:
        return _promote_for_cluster(adapter, actor=actor, worse=worse, override_reason=override_reason)
    with transaction.atomic():
        base = ModelSpec.objects.select_for_update().get(id=adapter.base_id)
        current = Adapter.objects.filter(base=base, status=Adapter.Status.PROMOTED, cluster="").first()
        replaced = (
            current.replaced
            if current is not None
            else {"adapter_path": base.adapter_path, "uncertainty_threshold": base.uncertainty_threshold}
        )
        if current is not None:
            Adapter.objects.filter(id=current.id).update(status=Adapter.Status.RETIRED)
        base.adapter_path = adapter.path
        if adapter.calibrated_threshold is not None:
            base.uncertainty_threshold = adapter.calibrated_threshold
        base.save()  # a configuration change: every process serves the adapter from its next request
        Adapter.objects.filter(id=adapter.id).update(
            status=Adapter.Status.PROMOTED, replaced=replaced, promoted_at=timezone.now()
        )
        audit.record(
            kind="adapter.promoted",
            actor=actor,
            adapter=adapter.name,
            base=base.name,
            retired=current.name if current else None,
            worse_clusters=worse,
            override_reason=override_reason,
        )
    adapter.refresh_from_db()
    return adapter


def _promote_for_cluster(adapter: Adapter, *, actor: str, worse: list[str], override_reason: str) -> Adapter:
    """An adapter of one task cluster: the router serves it to requests offering that cluster's
    tools (reviewq.config.snapshot), with its calibrated threshold; the base is left as it is."""
    with transaction.atomic():
        current = Adapter.objects.filter(
            base_id=adapter.base_id, cluster=adapter.cluster, status=Adapter.Status.PROMOTED
        ).first()
        if current is not None:
            Adapter.objects.filter(id=current.id).update(status=Adapter.Status.RETIRED)
        Adapter.objects.filter(id=adapter.id).update(
            status=Adapter.Status.PROMOTED, promoted_at=timezone.now()
        )
        audit.record(
            kind="adapter.promoted",
            actor=actor,
            adapter=adapter.name,
            base=adapter.base.name,
            cluster=adapter.cluster,
            retired=current.name if current else None,
            worse_clusters=worse,
            override_reason=override_reason,
        )
    adapter.refresh_from_db()
    return adapter


def retire(adapter: Adapter, *, actor: str) -> Adapter:
    """Stops serving a promoted adapter: a cluster's, or its base's (see ``rollback``)."""
    if not adapter.cluster:
        return rollback(adapter.base.name, actor=actor)
    if not Adapter.objects.filter(id=adapter.id, status=Adapter.Status.PROMOTED).update(
        status=Adapter.Status.RETIRED
    ):
        raise ApplicationError("invalid_status", f"adapter {adapter.name} is not promoted", status=409)
    audit.record(kind="adapter.rolled_back", actor=actor, adapter=adapter.name, base=adapter.base.name)
    adapter.refresh_from_db()
    return adapter


def rollback(base_name: str, *, actor: str) -> Adapter:
    """Stops serving the promoted adapter of ``base_name`` (over all its traffic) and restores
    what it replaced."""
    with transaction.atomic():
        base = ModelSpec.objects.select_for_update().get(name=base_name)
        adapter = Adapter.objects.filter(base=base, status=Adapter.Status.PROMOTED, cluster="").first()
        if adapter is None:
            raise ApplicationError("nothing_promoted", f"{base_name} serves no adapter", status=409)
        replaced = adapter.replaced or {}
        base.adapter_path = replaced.get("adapter_path") or ""
        base.uncertainty_threshold = replaced.get("uncertainty_threshold")
        base.save()
        Adapter.objects.filter(id=adapter.id).update(status=Adapter.Status.RETIRED)
        audit.record(kind="adapter.rolled_back", actor=actor, adapter=adapter.name, base=base.name)
    adapter.refresh_from_db()
    return adapter


def train_and_replay(*, base: str, cluster: str = "", actor: str = "system") -> str:
    """The training job (reviewq.tasks.train_adapter): a fresh dataset for ``cluster`` (or all),
    an adapter trained on it, replayed; returns the adapter's name."""
    dataset = build_dataset(DatasetOptions(clusters=[cluster] if cluster else []))
    adapter = train(base=base, dataset=dataset, cluster=cluster, actor=actor)
    if dataset.replay_rows:
        replay(adapter, actor=actor)
    return adapter.name


@dataclass(frozen=True)
class CycleStep:
    """What one learning cycle did for one base model, and why."""

    base: str
    adapter: str = ""
    promoted: bool = False
    reason: str = ""


def cycle_bases() -> list[str]:
    """The models the cycle trains for: LEARNING_CYCLE_BASES, else the cheapest small llama.cpp
    model that serves tool use."""
    if settings.LEARNING_CYCLE_BASES:
        return list(settings.LEARNING_CYCLE_BASES)
    small = ModelSpec.objects.filter(
        enabled=True, tier=Tier.SLM, backend=ModelSpec.Backend.LLAMA_CPP
    ).order_by("price_input_per_mtok", "price_output_per_mtok", "name")
    cheapest = next((spec for spec in small if TaskType.TOOL_USE in (spec.strengths or [])), None)
    return [cheapest.name] if cheapest else []


def auto_promotion_refusal(adapter: Adapter) -> str:
    """Why the cycle may not promote ``adapter`` by itself ("" when it may): the tasks it would
    serve are not all ones ops allowed, or its replay is no clear win over what serves now."""
    report = adapter.replay_report
    if report is None:
        return "not replayed"
    allowed = set(settings.LEARNING_CYCLE_AUTO_PROMOTE_TASKS)
    if not allowed:
        return "automatic promotion is off (LEARNING_CYCLE_AUTO_PROMOTE_TASKS)"
    if "*" not in allowed:
        finals = dict(TaskCluster.objects.values_list("key", "final"))
        tasks = {finals.get(key, "unclustered") for key in report["candidate"]["clusters"]}
        if not tasks <= allowed:
            return f"it would serve tasks ops did not allow: {', '.join(sorted(tasks - allowed))}"
    worse = worse_clusters(report)
    if worse:
        return f"worse than what serves now on {len(worse)} cluster(s)"
    gain = report["candidate"]["exact"] - report["base"]["exact"]
    if gain < settings.LEARNING_CYCLE_MIN_GAIN:
        return f"exact on replay gained {gain:+.0%}, less than {settings.LEARNING_CYCLE_MIN_GAIN:.0%}"
    return ""


def learning_cycle(*, force: bool = False, actor: str = "learning-cycle") -> list[CycleStep]:
    """One turn of the loop for each base: when enough trustworthy traces arrived since the last
    dataset (or ``force``), a new dataset, an adapter trained and replayed, and promotion where
    ``auto_promotion_refusal`` finds nothing against it. Runs on the training queue."""
    bases = cycle_bases()
    if not bases:
        return []
    last = Dataset.objects.order_by("-created_at").values_list("created_at", flat=True).first()
    new = trustworthy_traces_since(last)
    if not force and new < settings.LEARNING_CYCLE_MIN_NEW_TRACES:
        reason = f"{new} new trustworthy traces, waiting for {settings.LEARNING_CYCLE_MIN_NEW_TRACES}"
        return [CycleStep(base=base, reason=reason) for base in bases]
    steps = []
    dataset = build_dataset(DatasetOptions())
    for base in bases:
        try:
            adapter = train(base=base, dataset=dataset, actor=actor)
            if dataset.replay_rows:
                replay(adapter, actor=actor)
                adapter.refresh_from_db()
        except ApplicationError as exc:
            steps.append(CycleStep(base=base, reason=exc.message))
            continue
        refusal = auto_promotion_refusal(adapter)
        if not refusal:
            promote(adapter, actor=actor)
        steps.append(
            CycleStep(base=base, adapter=adapter.name, promoted=not refusal, reason=refusal or "a clear win")
        )
    audit.record(kind="learning.cycle", actor=actor, dataset=dataset.version, steps=[vars(s) for s in steps])
    return steps


def shadow(adapter: Adapter, *, actor: str) -> Adapter:
    """Puts a candidate in shadow: it answers live requests beside its base, logged, never released."""
    if adapter.status != Adapter.Status.CANDIDATE:
        raise ApplicationError("invalid_status", f"adapter {adapter.name} is {adapter.status}", status=409)
    Adapter.objects.filter(id=adapter.id, status=Adapter.Status.CANDIDATE).update(
        status=Adapter.Status.SHADOW
    )
    audit.record(kind="adapter.shadowed", actor=actor, adapter=adapter.name, base=adapter.base.name)
    adapter.refresh_from_db()
    return adapter


def shadow_propose(request_id: Any, adapter_id: int) -> None:
    """A shadow adapter's answer to a live request, logged as a ModelCall of purpose ``shadow``
    (never released, and left out of the dashboard's serving figures)."""
    request = Request.objects.filter(id=request_id).first()
    adapter = (
        Adapter.objects.filter(id=adapter_id, status=Adapter.Status.SHADOW).select_related("base").first()
    )
    if request is None or adapter is None:
        return
    task = task_spec_for(request)
    spec = adapter.base
    try:
        generation = get_adapter_backend(spec, adapter.path).generate(
            build_prompt(task, context_tokens=spec.context_size)
        )
    except BackendError as exc:
        model_call_record(
            request_id=request.id,
            spec=spec,
            purpose=ModelCall.Purpose.SHADOW,
            attempt=1,
            error=str(exc),
            model_name=adapter.name,
        )
        return
    parsed, _, issues = parse_answer(task, generation.text)
    model_call_record(
        request_id=request.id,
        spec=spec,
        purpose=ModelCall.Purpose.SHADOW,
        attempt=1,
        generation=generation,
        parsed_output=parsed,
        issues=issues,
        model_name=adapter.name,
    )


def shadow_agreement(adapter: Adapter) -> dict[str, Any]:
    """How often the shadow adapter's answers matched what was finally released, so far."""
    calls = ModelCall.objects.filter(
        purpose=ModelCall.Purpose.SHADOW, model_name=adapter.name, request__status=RequestStatus.RELEASED
    ).select_related("request")
    compared = agreed = 0
    for call in calls.iterator(chunk_size=500):
        if call.request.action is None:
            continue
        compared += 1
        answer = (
            action_of_answer(call.parsed_output) if call.parsed_output is not None and call.is_valid else None
        )
        agreed += answer is not None and compare_answers(call.request.action, answer) == Agreement.AGREES
    return {"compared": compared, "agreed": agreed, "rate": agreed / compared if compared else None}

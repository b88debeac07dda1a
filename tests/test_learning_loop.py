"""The learning loop after training: promotion is gated by replay, the router serves a promoted
adapter with its calibrated threshold, and rollback restores the base. Every step is audited."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reviewq.errors import ApplicationError
from reviewq.models import AuditEvent
from reviewq.services import learning
from router import calibration
from router.backends import llama_cpp, registry
from router.models import Adapter, ModelSpec

pytestmark = pytest.mark.django_db


def report(
    base: dict[str, float], candidate: dict[str, float], threshold: float | None = 0.3
) -> dict[str, Any]:
    return {
        "rows": 10,
        "base": {"clusters": base, "exact": 0.5},
        "candidate": {"clusters": candidate, "exact": 0.8, "threshold": threshold},
    }


@pytest.fixture
def base(seeded: None) -> ModelSpec:
    return ModelSpec.objects.get(name="qwen2.5-coder-0.5b-instruct")


def candidate(
    base: ModelSpec, name: str, replay: dict[str, Any] | None, threshold: float | None = 0.3
) -> Adapter:
    return Adapter.objects.create(
        name=name,
        base=base,
        path=f"/adapters/{name}.gguf",
        dataset_version=1,
        dataset_sha256="x",
        replay_report=replay,
        calibrated_threshold=threshold,
    )


def test_a_candidate_worse_on_any_cluster_is_refused_unless_ops_say_why(base: ModelSpec) -> None:
    worse = candidate(base, "worse", report({"a": 0.9, "b": 0.5}, {"a": 0.8, "b": 0.9}))
    with pytest.raises(ApplicationError, match="worse than the base on 1 cluster"):
        learning.promote(worse, actor="ops")
    assert ModelSpec.objects.get(id=base.id).adapter_path == ""
    unreplayed = candidate(base, "unreplayed", None)
    with pytest.raises(ApplicationError, match="replay the adapter"):
        learning.promote(unreplayed, actor="ops")
    promoted = learning.promote(worse, actor="ops", override_reason="cluster a is retired next week")
    assert promoted.status == "promoted"
    event = AuditEvent.objects.filter(kind="adapter.promoted").get()
    assert event.payload["worse_clusters"] == ["a"] and event.payload["override_reason"]


def test_promotion_serves_the_adapter_with_its_threshold_and_rollback_restores_the_base(
    base: ModelSpec,
) -> None:
    base.uncertainty_threshold = 0.9
    base.save()
    first = learning.promote(candidate(base, "first", report({"a": 0.5}, {"a": 0.9}), 0.3), actor="ops")
    served = ModelSpec.objects.get(id=base.id)
    assert (served.adapter_path, served.uncertainty_threshold) == (first.path, 0.3)
    # A second promotion retires the first; rollback goes back to the base as it was.
    second = learning.promote(candidate(base, "second", report({"a": 0.5}, {"a": 0.95}), 0.4), actor="ops")
    assert Adapter.objects.get(id=first.id).status == "retired"
    assert ModelSpec.objects.get(id=base.id).adapter_path == second.path
    learning.rollback(base.name, actor="ops")
    restored = ModelSpec.objects.get(id=base.id)
    assert (restored.adapter_path, restored.uncertainty_threshold) == ("", 0.9)
    assert Adapter.objects.get(id=second.id).status == "retired"
    assert [e.kind for e in AuditEvent.objects.order_by("seq")] == [
        "adapter.promoted",
        "adapter.promoted",
        "adapter.rolled_back",
    ]
    with pytest.raises(ApplicationError, match="serves no adapter"):
        learning.rollback(base.name, actor="ops")


def test_the_router_loads_the_promoted_adapter_over_its_base(
    base: ModelSpec, monkeypatch: pytest.MonkeyPatch, settings: Any, tmp_path: Path
) -> None:
    settings.REVIEWQ_MODEL_BACKEND = "real"
    loaded: list[Any] = []

    class Recorded:
        def __init__(self, path: Any, **options: Any) -> None:
            loaded.append(options.get("lora_path"))

    monkeypatch.setattr(llama_cpp, "LlamaCppBackend", Recorded)
    monkeypatch.setattr(registry, "resolve_model_path", lambda reference: tmp_path / "base.gguf")
    registry.reset_backends()
    try:
        plain = registry.get_backend(base)
        base.adapter_path = str(tmp_path / "adapter.gguf")
        adapted = registry.get_backend(base)
        assert adapted is not plain and loaded == [None, base.adapter_path]
        assert registry.get_backend(base) is adapted  # loaded once
    finally:
        registry.reset_backends()


def test_calibration_figures() -> None:
    assert calibration.auroc([0.1, 0.2], [0.8, 0.9]) == 1.0
    assert calibration.auroc([0.5], [0.5]) == 0.5
    assert calibration.auroc([], [0.3]) is None
    # Right answers at low scores: a threshold of 0.2 keeps 2 right of 2; at 0.6, 2 of 3.
    assert calibration.release_threshold([0.1, 0.2, 0.6, 0.9], [True, True, False, True], 0.95) == 0.2
    assert calibration.release_threshold([0.1], [False], 0.95) is None
    perfect = calibration.expected_calibration_error([0.0, 0.0], [True, True])
    assert perfect == 0.0


@pytest.mark.django_db(transaction=True)
def test_a_shadow_adapter_answers_beside_its_base_and_is_never_released(
    base: ModelSpec, agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reviewq.services.intake import request_create
    from telemetry.models import ModelCall
    from tests.conftest import run_tasks_inline
    from tests.factories import read_body

    run_tasks_inline(monkeypatch, "reviewq.tasks.run_pipeline", "reviewq.tasks.shadow_propose")
    adapter = learning.shadow(candidate(base, "shadowed", None), actor="ops")
    assert adapter.status == "shadow"
    request, _ = request_create(agent_key=agent[0], payload=read_body())
    request.refresh_from_db()
    assert request.status == "released"
    shadow_calls = ModelCall.objects.filter(request=request, purpose="shadow")
    [call] = shadow_calls
    assert call.model_name == "shadowed" and call.model_spec_id == base.id
    # The release came from the base; the shadow's answer is only compared.
    assert request.decision["model"] == base.name
    assert learning.shadow_agreement(adapter) == {"compared": 1, "agreed": 1, "rate": 1.0}
    # It cannot be shadowed twice, and promotion still wants a replay.
    with pytest.raises(ApplicationError):
        learning.shadow(adapter, actor="ops")


@pytest.mark.django_db(transaction=True)
def test_a_clusters_adapter_serves_that_clusters_requests_only(
    base: ModelSpec, agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reviewq.services.intake import request_create
    from telemetry.clusters import build_clusters
    from telemetry.models import ModelCall
    from tests.conftest import run_tasks_inline
    from tests.factories import body

    run_tasks_inline(monkeypatch, "reviewq.tasks.run_pipeline")
    lookup = ("get_order_details", "cancel_pending_order")

    def submit(*tools: str) -> Any:
        request, _ = request_create(
            agent_key=agent[0], payload=body("Get order details for order_id=#W2378156", *tools)
        )
        request.refresh_from_db()
        return request

    submit(*lookup)
    [cluster] = [c for c in build_clusters() if c.final == "get_order_details"]
    adapter = candidate(base, "lookups", report({cluster.key: 0.5}, {cluster.key: 0.9}), threshold=0.25)
    Adapter.objects.filter(id=adapter.id).update(cluster=cluster.key)
    adapter.refresh_from_db()
    learning.promote(adapter, actor="ops")
    assert ModelSpec.objects.get(id=base.id).adapter_path == ""  # the base serves everything else

    served = submit(*lookup)
    assert served.route["model"] == "lookups" and served.route["base"] == base.name
    assert ModelCall.objects.get(request=served, purpose="propose").model_name == "lookups"
    assert served.decision["model"] == "lookups"
    other = submit("get_order_details", "get_user_details")  # another tool set: another task
    assert other.route["model"] == base.name

    learning.retire(adapter, actor="ops")
    assert submit(*lookup).route["model"] == base.name


# --- The scheduled cycle, replay against what serves now, generations ---


@pytest.fixture
def trained(monkeypatch: pytest.MonkeyPatch, base: ModelSpec) -> list[dict[str, Any]]:
    """train and replay stand-ins that record their calls (real training: tests/test_training.py)."""
    replays: list[dict[str, Any]] = []

    def train(*, base: str, dataset: Any, actor: str, **_: Any) -> Adapter:
        return candidate(ModelSpec.objects.get(name=base), f"cycle-v{dataset.version}", None)

    def replay(adapter: Adapter, **_: Any) -> dict[str, Any]:
        figures = replays.pop(0)
        Adapter.objects.filter(id=adapter.id).update(replay_report=figures)
        return figures

    monkeypatch.setattr(learning, "train", train)
    monkeypatch.setattr(learning, "replay", replay)
    return replays


@pytest.mark.django_db(transaction=True)
def test_the_cycle_waits_for_new_traces_then_trains_and_promotes_only_a_clear_allowed_win(
    base: ModelSpec,
    agent: Any,
    reviewer: Any,
    trained: list[dict[str, Any]],
    settings: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from reviewq.models import ReviewItem
    from reviewq.services.decisions import review_approve
    from reviewq.services.intake import request_create
    from tests.conftest import run_tasks_inline
    from tests.factories import risky_body

    settings.DATA_DIR = tmp_path
    settings.LEARNING_CYCLE_BASES = [base.name]
    settings.LEARNING_CYCLE_MIN_NEW_TRACES = 2
    run_tasks_inline(monkeypatch, "reviewq.tasks.run_pipeline")

    def golden(n: int) -> None:
        for _ in range(n):
            request, _ = request_create(agent_key=agent[0], payload=risky_body())
            review_approve(item_id=ReviewItem.objects.get(request=request).id, reviewer=reviewer)

    golden(1)
    [waiting] = learning.learning_cycle()
    assert not waiting.adapter and "1 new trustworthy traces, waiting for 2" in waiting.reason
    golden(2)
    # Ops allowed no task: trained and replayed, never promoted by the cycle.
    trained.append(
        {"rows": 2, "base": {"exact": 0.2, "clusters": {}}, "candidate": {"exact": 0.9, "clusters": {}}}
    )
    [step] = learning.learning_cycle()
    assert step.adapter == "cycle-v1" and not step.promoted and "automatic promotion is off" in step.reason
    assert learning.learning_cycle()[0].reason.startswith("0 new trustworthy traces")  # nothing new since

    settings.LEARNING_CYCLE_AUTO_PROMOTE_TASKS = ["*"]
    trained.append(
        {"rows": 2, "base": {"exact": 0.5, "clusters": {}}, "candidate": {"exact": 0.52, "clusters": {}}}
    )
    [small_gain] = learning.learning_cycle(force=True)
    assert not small_gain.promoted and "gained +2%" in small_gain.reason
    trained.append(
        {
            "rows": 2,
            "base": {"exact": 0.5, "clusters": {"a": 0.5}},
            "candidate": {"exact": 0.9, "clusters": {"a": 0.9}},
        }
    )
    [win] = learning.learning_cycle(force=True)
    assert win.promoted and Adapter.objects.get(name=win.adapter).status == "promoted"
    assert AuditEvent.objects.filter(kind="learning.cycle").count() == 3


def test_auto_promotion_names_tasks_ops_did_not_allow(base: ModelSpec, settings: Any) -> None:
    from django.utils import timezone

    from telemetry.models import TaskCluster

    TaskCluster.objects.create(key="k1", final="get_order_details", built_at=timezone.now())
    TaskCluster.objects.create(key="k2", final="cancel_pending_order", built_at=timezone.now())
    adapter = candidate(base, "both", report({"k1": 0.1, "k2": 0.1}, {"k1": 0.9, "k2": 0.9}))
    settings.LEARNING_CYCLE_AUTO_PROMOTE_TASKS = ["get_order_details"]
    assert "did not allow: cancel_pending_order" in learning.auto_promotion_refusal(adapter)
    settings.LEARNING_CYCLE_AUTO_PROMOTE_TASKS = ["get_order_details", "cancel_pending_order"]
    assert learning.auto_promotion_refusal(adapter) == ""


def test_replay_compares_with_what_serves_now(base: ModelSpec) -> None:
    first = learning.promote(candidate(base, "first", report({"a": 0.5}, {"a": 0.9})), actor="ops")
    second = candidate(base, "second", None)
    assert learning.served_now(second) == ("first", first.path)
    learning.rollback(base.name, actor="ops")
    assert learning.served_now(second) == (base.name, None)


@pytest.mark.django_db(transaction=True)
def test_each_adapter_generation_gets_its_own_figures(
    base: ModelSpec, agent: Any, monkeypatch: pytest.MonkeyPatch, client: Any, reviewer: Any
) -> None:
    from reviewq.services.intake import request_create
    from telemetry.clusters import generations
    from tests.conftest import run_tasks_inline
    from tests.factories import read_body

    run_tasks_inline(monkeypatch, "reviewq.tasks.run_pipeline")
    ModelSpec.objects.filter(tier="slm").exclude(id=base.id).update(enabled=False)
    request_create(agent_key=agent[0], payload=read_body())
    learning.promote(candidate(base, "gen-1", report({"a": 0.5}, {"a": 0.9}), threshold=None), actor="ops")
    for _ in range(2):
        request_create(agent_key=agent[0], payload=read_body())
    rows = {row.name: row for row in generations()}
    assert (rows[base.name].requests, rows["gen-1"].requests) == (1, 2)
    assert rows["gen-1"].adapter.status == "promoted" and rows["gen-1"].auto_release_rate == 1.0
    client.force_login(reviewer)
    page = client.get("/dashboard/learning/").content.decode()
    assert "gen-1" in page and "adapter, promoted" in page

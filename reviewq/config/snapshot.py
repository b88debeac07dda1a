"""Ops' configuration, read once per change instead of once per request.

Every request reads the same few rows: the tools' rules and risk tags, the risk policies, the
escalation policy and the model registry. Each process keeps them as one immutable snapshot,
tagged with ConfigVersion's stamp. Every write to them changes the stamp in the same transaction
(router.models.ConfigModel), and the pipeline reads the stamp in the same query as its request,
so a changed configuration is used from the first request read after the change commits, at no
extra query otherwise.

Without a stamp (its row is missing: a flushed test database) nothing is cached.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.contrib.auth.models import Group
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Subquery
from django.db.models.signals import post_delete, post_migrate

from reviewq.models import RiskPolicy, ToolSpec
from router.models import Adapter, ConfigVersion, EscalationPolicy, ModelSpec
from telemetry.models import TaskCluster


@dataclass(frozen=True)
class Configuration:
    """The enabled tools, risk policies and models, and the escalation policies, as of ``stamp``.

    Shared by the threads of a process: read it, never change the rows it holds.
    """

    stamp: str | None
    tools: Mapping[str, ToolSpec]
    risk_policies: tuple[RiskPolicy, ...]  # in the order they are checked
    escalation_policies: Mapping[str, EscalationPolicy]
    models: tuple[ModelSpec, ...]
    # Adapters in shadow, by the id of the model they answer beside.
    shadow_adapters: Mapping[int, tuple[Adapter, ...]] = field(default_factory=dict)
    # Promoted adapters of one task cluster, by model id, with the cluster's tool set.
    cluster_adapters: Mapping[int, tuple[tuple[frozenset[str], Adapter], ...]] = field(default_factory=dict)
    # The promoted adapter over all of a model's traffic (its ``adapter_path``), by model id.
    base_adapters: Mapping[int, Adapter] = field(default_factory=dict)

    def adapter_for(self, model: ModelSpec, tool_names: Iterable[str]) -> Adapter | None:
        """The promoted adapter of ``model`` for the cluster that offers exactly these tools."""
        tools = frozenset(tool_names)
        return next((a for cluster, a in self.cluster_adapters.get(model.id, ()) if cluster == tools), None)

    def tools_named(self, names: Iterable[str]) -> dict[str, ToolSpec]:
        return {name: self.tools[name] for name in names if name in self.tools}

    def tool_rules(self, names: Iterable[str]) -> dict[str, list[dict[str, str]]]:
        """The business rules ops set on each of the named tools that they registered."""
        return {name: list(tool.rules or []) for name, tool in self.tools_named(names).items()}

    def escalation_for(self, task_type: str) -> EscalationPolicy:
        """The task type's escalation policy, or the defaults when ops have not set one."""
        return self.escalation_policies.get(task_type) or EscalationPolicy(task_type=task_type)


def stamp_subquery() -> Subquery:
    """The current stamp, to annotate onto another query (``config_stamp``) and save a round trip."""
    return Subquery(ConfigVersion.objects.filter(pk=1).values("stamp")[:1])


_READ_IT = object()
_cached: Configuration | None = None
_lock = threading.Lock()


def current_configuration(stamp: Any = _READ_IT) -> Configuration:
    """The configuration as of ``stamp`` (read from the database when not given).

    The process's snapshot when its stamp matches; otherwise the rows are read again.
    """
    global _cached
    if stamp is _READ_IT:
        stamp = ConfigVersion.objects.filter(pk=1).values_list("stamp", flat=True).first()
    stamp = str(stamp) if stamp is not None else None
    cached = _cached
    if stamp is not None and cached is not None and cached.stamp == stamp:
        return cached
    with _lock:  # one thread reads the rows; the others wait for its snapshot
        if stamp is not None and _cached is not None and _cached.stamp == stamp:
            return _cached
        configuration = _read(stamp)
        if stamp is not None:
            _cached = configuration
        return configuration


def _read(stamp: str | None) -> Configuration:
    return Configuration(
        stamp=stamp,
        tools={tool.name: tool for tool in ToolSpec.objects.filter(enabled=True)},
        risk_policies=tuple(RiskPolicy.objects.filter(enabled=True).order_by("priority", "id")),
        escalation_policies={policy.task_type: policy for policy in EscalationPolicy.objects.all()},
        models=tuple(ModelSpec.objects.filter(enabled=True)),
        shadow_adapters=_shadows(),
        cluster_adapters=_cluster_adapters(),
        base_adapters={
            adapter.base_id: adapter
            for adapter in Adapter.objects.filter(status=Adapter.Status.PROMOTED, cluster="")
        },
    )


def _cluster_adapters() -> dict[int, tuple[tuple[frozenset[str], Adapter], ...]]:
    promoted = list(Adapter.objects.filter(status=Adapter.Status.PROMOTED).exclude(cluster=""))
    tool_sets = dict(
        TaskCluster.objects.filter(key__in=[a.cluster for a in promoted]).values_list("key", "tool_set")
    )
    by_base: dict[int, list[tuple[frozenset[str], Adapter]]] = {}
    for adapter in promoted:
        if adapter.cluster in tool_sets:
            by_base.setdefault(adapter.base_id, []).append((frozenset(tool_sets[adapter.cluster]), adapter))
    return {base: tuple(adapters) for base, adapters in by_base.items()}


def _shadows() -> dict[int, tuple[Adapter, ...]]:
    by_base: dict[int, list[Adapter]] = {}
    for adapter in Adapter.objects.filter(status=Adapter.Status.SHADOW).select_related("base"):
        by_base.setdefault(adapter.base_id, []).append(adapter)
    return {base: tuple(adapters) for base, adapters in by_base.items()}


def _changed(**kwargs: Any) -> None:
    ConfigVersion.bump()


def _migrated(using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> None:
    # Also sent after a migration back to before the stamp's table existed.
    if ConfigVersion._meta.db_table in connections[using].introspection.table_names():
        ConfigVersion.bump()


def connect_signals() -> None:
    """Changes that bypass ConfigModel's writes: deleting a reviewer group clears it from the
    policies in SQL, and a migration (or a flush) may rewrite configuration rows."""
    post_delete.connect(_changed, sender=Group, dispatch_uid="reviewq.config.snapshot.group")
    post_migrate.connect(
        _migrated, sender=apps.get_app_config("router"), dispatch_uid="reviewq.config.snapshot.migrate"
    )

"""Bench-only instrumentation: runs a server or worker with timers around the pipeline's steps.

    python bench/probe.py uvicorn reviewq.asgi:application ...   # instead of python -m uvicorn ...
    python bench/probe.py celery -A reviewq worker ...            # instead of python -m celery ...

It calls ``django.setup()``, wraps a few functions (module attributes and class methods, so the
product code is unchanged), then runs the named module as ``__main__``. Each span (one pipeline
run, one intake, one wait) is written as a JSON line to ``$BENCH_PROBE_FILE`` by a background
thread, off the request path.

Time inside a span is attributed to the innermost active category (exclusive time), so the
categories of a span add up to its wall time:

- ``db``: Django's SQL compilers' ``execute_sql`` (SQL building, the round trip, fetching rows)
  and ``_commit`` — the ORM's database work, not model instantiation;
- ``connect``: ``BaseDatabaseWrapper.connect`` (a new connection, or one from a pool);
- ``routing``: ``current_configuration``, ``task_spec_for``, ``rungs``,
  ``estimate_tokens``, ``build_prompt``, ``get_backend``;
- ``model``: the backend's ``generate`` (LlamaCppBackend or FakeBackend); llama.cpp's
  ``last_stats`` (prefill/decode split, prefix-cache hit) are kept per call;
- ``validation``: ``parse_answer`` (JSON, schema, grounding, rules), ``_confidence``,
  ``_too_uncertain``, ``_decide`` (risk policy), ``_pii_in``;
- ``telemetry``: ``model_call_record`` (its INSERT counts as ``db``);
- ``push``: ``live.push_item_added`` (template render + channel-layer send), with per-item times;
- ``alerts``: ``alerts.page_if_nobody_watching``; ``webhook``: ``webhooks.request_finished``;
- ``other``: the rest of ``run_pipeline`` (state moves' Python side, ORM object building, ...).

With BENCH_PROBE_SQL=1 each span also lists its SQL statements (first words) with their times.

The wrappers cost about a microsecond each (a context-variable read and two perf_counter calls).
"""

from __future__ import annotations

import atexit
import contextvars
import functools
import json
import os
import queue
import runpy
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_current: contextvars.ContextVar[Span | None] = contextvars.ContextVar("bench_probe_span", default=None)
_lines: queue.SimpleQueue[str] = queue.SimpleQueue()


class Span:
    """Exclusive time per category for one unit of work (one pipeline run, one intake...)."""

    def __init__(self, kind: str, key: str = "") -> None:
        self.kind = kind
        self.key = key
        self.t_enter = time.time()
        self._stack: list[list[Any]] = []
        self.totals: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.extra: dict[str, Any] = {}

    def enter(self, category: str) -> None:
        self._stack.append([category, time.perf_counter(), 0.0])

    def exit(self) -> None:
        category, started, children = self._stack.pop()
        elapsed = time.perf_counter() - started
        self.totals[category] = self.totals.get(category, 0.0) + (elapsed - children) * 1000
        self.counts[category] = self.counts.get(category, 0) + 1
        if self._stack:
            self._stack[-1][2] += elapsed

    def emit(self) -> None:
        record = {
            "kind": self.kind,
            "key": self.key,
            "pid": os.getpid(),
            "t_enter": self.t_enter,
            "t_exit": time.time(),
            "ms": self.totals,
            "counts": self.counts,
            **self.extra,
        }
        _lines.put(json.dumps(record, default=str))


def _flusher(path: str) -> None:
    while True:
        time.sleep(0.2)
        _flush(path)


def _flush(path: str) -> None:
    batch = []
    while True:
        try:
            batch.append(_lines.get_nowait())
        except queue.Empty:
            break
    if batch:
        with open(path, "a") as output:
            output.write("\n".join(batch) + "\n")


def timed(category: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        span = _current.get()
        if span is None:
            return function(*args, **kwargs)
        span.enter(category)
        try:
            return function(*args, **kwargs)
        finally:
            span.exit()

    return wrapper


def spanned(kind: str, function: Callable[..., Any], key_of: Callable[..., str]) -> Callable[..., Any]:
    """Runs ``function`` as the root of a new span; time outside any category is ``other``."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        span = Span(kind, key_of(*args, **kwargs))
        token = _current.set(span)
        span.enter("other")
        result = None
        try:
            result = function(*args, **kwargs)
            return result
        finally:
            span.exit()
            _current.reset(token)
            if kind == "intake" and isinstance(result, tuple):
                span.key = str(result[0].id)
            span.emit()

    return wrapper


def _patch(owner: Any, name: str, category: str) -> None:
    original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    if isinstance(original, classmethod):
        setattr(owner, name, classmethod(timed(category, original.__func__)))
    else:
        setattr(owner, name, timed(category, original))


def _record_statements() -> None:
    """BENCH_PROBE_SQL=1: each span also lists its statements (first words) and their wall times."""
    from django.db.backends.utils import CursorWrapper

    execute = CursorWrapper.execute

    def recorded(self: Any, sql: str, params: Any = None) -> Any:
        span = _current.get()
        started = time.perf_counter()
        try:
            return execute(self, sql, params)
        finally:
            if span is not None:
                elapsed = (time.perf_counter() - started) * 1000
                span.extra.setdefault("sql", []).append((" ".join(sql.split()[:4])[:80], round(elapsed, 3)))

    CursorWrapper.execute = recorded  # type: ignore[method-assign,assignment]


def install() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reviewq.settings")
    django.setup()

    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models.sql import compiler

    from reviewq import api, selectors, tasks
    from reviewq.notify import alerts, push, webhooks
    from reviewq.pipeline import ladder, run
    from router.backends.fake import FakeBackend

    for klass in (compiler.SQLCompiler, compiler.SQLInsertCompiler, compiler.SQLUpdateCompiler):
        _patch(klass, "execute_sql", "db")
    _patch(BaseDatabaseWrapper, "connect", "connect")
    if os.environ.get("BENCH_PROBE_SQL"):
        _record_statements()
    _patch(BaseDatabaseWrapper, "_commit", "db")
    # Each name is patched where the pipeline calls it (the modules import them by name).
    for module, name in (
        (run, "current_configuration"),
        (run, "task_spec_for"),
        (run, "build_prompt"),
        (ladder, "rungs"),
        (ladder, "estimate_tokens"),
        (ladder, "build_prompt"),
        (ladder, "get_backend"),
    ):
        _patch(module, name, "routing")
    _patch(ladder, "parse_answer", "validation")
    _patch(run, "decide_answer", "validation")
    _patch(ladder, "model_call_record", "telemetry")
    _patch(alerts, "page_if_nobody_watching", "alerts")
    _patch(webhooks, "request_finished", "webhook")
    _patch(FakeBackend, "generate", "model")
    try:
        from router.backends.llama_cpp import LlamaCppBackend
    except ImportError:  # numpy missing: no local models in this process anyway
        LlamaCppBackend = None  # type: ignore[assignment,misc]
    if LlamaCppBackend is not None:
        generate = LlamaCppBackend.generate

        def llama_generate(self: Any, prompt: Any) -> Any:
            result = timed("model", generate)(self, prompt)
            span = _current.get()
            if span is not None:
                stats = {**self.last_stats, "latency_ms": result.latency_ms, "model": self.model_path.name}
                span.extra.setdefault("model_calls", []).append(stats)
            return result

        LlamaCppBackend.generate = llama_generate  # type: ignore[method-assign]

    pushed = push.push_item_upserted

    def push_item_upserted(item: Any) -> None:
        span = _current.get()
        started = time.time()
        timed("push", pushed)(item)
        if span is not None:
            span.extra.setdefault("push", []).append({"item": item.id, "t0": started, "t1": time.time()})

    push.push_item_upserted = push_item_upserted  # type: ignore[assignment]

    tasks.run_request_pipeline = spanned(  # type: ignore[assignment]
        "pipeline", tasks.run_request_pipeline, lambda request_id: str(request_id)
    )
    api.request_create = spanned("intake", api.request_create, lambda **kw: "")  # type: ignore[assignment]
    api.agent_key_authenticate = spanned(  # type: ignore[assignment]
        "auth", api.agent_key_authenticate, lambda *a, **kw: ""
    )
    wait_final = selectors.request_wait_final

    async def request_wait_final(**kwargs: Any) -> Any:
        span = Span("wait", str(kwargs.get("request_id")))
        token = _current.set(span)
        span.enter("other")
        try:
            return await wait_final(**kwargs)
        finally:
            span.exit()
            _current.reset(token)
            span.emit()

    selectors.request_wait_final = request_wait_final  # type: ignore[assignment]


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    path = os.environ.get("BENCH_PROBE_FILE") or str(ROOT / "bench" / "results" / "probe.jsonl")
    install()

    def start_flusher() -> None:
        threading.Thread(target=_flusher, args=(path,), name="bench-probe-flush", daemon=True).start()

    start_flusher()
    # A forked worker (Celery prefork) inherits the wrappers but not the flushing thread.
    os.register_at_fork(after_in_child=start_flusher)
    atexit.register(_flush, path)
    module, *rest = sys.argv[1:]
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

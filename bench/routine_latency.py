"""Routine latency: a read-only tool call posted with ``wait_ms``, released by the auto path.

    .venv/bin/python bench/routine_latency.py [--requests 200] [--tools all|read]
        [--mode embedded|services] [--message "Get order details for order_id=#W{n}"]
        [--model-threads N] [--model-threads-when-idle N] [--busy-neighbour]

What it does: starts reviewq against a fresh database with the real local models
(REVIEWQ_MODEL_BACKEND=real), seeds it (migrate, seed_demo, an agent key) and posts the
τ-bench retail tools (``all`` 16, or the 8 ``read`` ones) with one user message, one request
at a time, each with ``wait_ms``. The order number changes on every request, so the model
evaluates a new user turn on top of its cached system prefix, as it would in production.
``--warmup`` requests first (not counted, posted without ``wait_ms``, then the bench waits until
the pipeline is idle) load the model and evaluate the tool prefix; the first one is reported as
the cold request (sent -> its row's last update).

- ``embedded`` (default product mode): one uvicorn process, SQLite, no Redis; the pipeline runs
  in the web process's thread pool.
- ``services``: uvicorn + a Celery worker process (prefork, concurrency 1, as in the Makefile),
  PostgreSQL and Redis.

Both processes run under bench/probe.py. Every request is classified by its final status:
auto-released, held for a human (the 135M model's wrong answers: failed validation twice, or a
risky tool), or other. Held requests are listed separately; with ``wait_ms`` their POST waits the
whole ``wait_ms`` (awaiting_review is not final), so their "time to hold" is reported instead.

The split of a released request's end-to-end time (all on one wall clock):

- ``e2e``        client: response received - request sent (``time.time()`` around the POST);
- ``intake``     Request.created_at - sent: HTTP, auth, pydantic, ``request_create`` up to the INSERT;
- ``queueing``   probe: pipeline start - Request.created_at (commit, on_commit, hand-off to the
                 pipeline thread or Redis -> Celery -> child process);
- ``routing``, ``model``, ``validation``, ``db``, ``telemetry``, ``other``: exclusive time inside
                 ``run_pipeline`` (see bench/probe.py); ``model`` agrees with the sum of the
                 ModelCall rows' ``latency_ms`` (shown as ``model (rows)``);
- ``respond``    response received - pipeline end: the final-state announcement waking the
                 waiter (reviewq/finality.py), its read of the row, serialising, HTTP.

Threads: llama.cpp runs each evaluation on every core while nothing else on the machine is
runnable (MODEL_THREADS_WHEN_IDLE), else on MODEL_THREADS (all cores but one). ``--busy-neighbour``
keeps one core busy with another process during the timed run, to check that the model then
stays on MODEL_THREADS; ``--model-threads-when-idle 0`` gives the fixed thread count.

Without the probe (``--no-probe``), the split comes from the rows alone: intake as above,
``pipeline`` = finished_at - created_at - model, ``respond`` = received - finished_at.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections import Counter
from typing import Any

from harness import (
    Client,
    CpuMeter,
    Profiler,
    child_pids,
    epoch,
    free_port,
    json_field,
    machine,
    print_profile,
    process_cpu_seconds,
    profile_report,
    request_body,
    stack,
    summary,
    table,
    tool_set,
    wait_until_idle,
    write_results,
)

CATEGORIES = ("routing", "model", "validation", "db", "connect", "telemetry", "webhook", "other")


def run(args: argparse.Namespace) -> dict[str, Any]:
    services = args.mode == "services"
    tools = tool_set(args.tools)
    options: dict[str, Any] = {
        "database": "postgres" if services else "sqlite",
        "redis": services,
        "model_backend": "real",
        "keep": args.keep,
    }
    options["extra_env"] = {}
    if args.model_threads:
        options["extra_env"]["MODEL_THREADS"] = str(args.model_threads)
    if args.model_threads_when_idle is not None:
        options["extra_env"]["MODEL_THREADS_WHEN_IDLE"] = str(args.model_threads_when_idle)
    with stack(f"routine_{args.mode}", **options) as st:
        key = st.seed()
        port = free_port()
        server = st.start_uvicorn(port, probe=args.probe)
        worker = st.start_celery(probe=args.probe) if services else None
        client = Client(port, key)
        print(
            f"{args.mode}: {st.database_url.split('?')[0]}, tools={args.tools} ({len(tools)}), "
            f"server pid {server.pid}"
        )

        def post(index: int, wait_ms: int = args.wait_ms) -> dict[str, Any]:
            body = request_body(args.message.format(n=2378156 + 7919 * index), tools, wait_ms=wait_ms)
            sent = time.time()
            status, answer = client.request("POST", "/api/v1/requests", body)
            received = time.time()
            return {
                "index": index,
                "sent": sent,
                "received": received,
                "http": status,
                "status": answer.get("status") if isinstance(answer, dict) else None,
                "id": answer.get("id") if isinstance(answer, dict) else None,
            }

        # Warm-up without wait_ms (a held one would wait it out), then until the pipeline is idle.
        warmups = [post(-1 - i, wait_ms=0) for i in range(args.warmup)]
        wait_until_idle(st, timeout=300)  # nothing left over from the warm-up in the timed run
        for warm in warmups:
            row = st.query(
                "SELECT status, updated_at FROM reviewq_request WHERE id = ?", [_db_id(st, warm["id"])]
            )
            warm["status"] = row[0]["status"] if row else None
            warm["received"] = epoch(row[0]["updated_at"]) if row else float("nan")
            print(
                f"warm-up: {warm['status']} "
                f"after {(warm['received'] - warm['sent']) * 1000:.0f} ms (server time)"
            )
        profiler = None
        if args.profile:
            target = server.pid
            if worker is not None:
                target = (child_pids(worker.pid) or [worker.pid])[0]
            profiler = Profiler(target, st.data_dir / "profile.txt")
        # A neighbour that keeps one core busy (another service on the host, a batch job): the
        # case MODEL_THREADS leaves a core for, and the one MODEL_THREADS_WHEN_IDLE must notice.
        neighbour = (
            subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy_neighbour else None
        )
        cpu = CpuMeter()
        cpu_pids = {"web": server.pid}
        if worker is not None:
            cpu_pids["worker child"] = (child_pids(worker.pid) or [worker.pid])[0]
        cpu_before = {name: process_cpu_seconds(pid) for name, pid in cpu_pids.items()}
        started = time.monotonic()
        results = []
        try:
            for index in range(args.requests):
                results.append(post(index))
                if (index + 1) % 50 == 0:
                    print(f"  {index + 1}/{args.requests} ({time.monotonic() - started:.0f} s)")
            busy = cpu.busy_share()
        finally:
            if neighbour is not None:  # never left spinning, whatever happened
                neighbour.kill()
                neighbour.wait()
        cpu_ms = {
            name: 1000 * (process_cpu_seconds(pid) - cpu_before[name]) / max(1, args.requests)
            for name, pid in cpu_pids.items()
        }
        if profiler is not None:
            profiler.stop()
        client.close()
        still_working = wait_until_idle(st, timeout=60)
        rows = {str(r["id"]): r for r in st.query("SELECT * FROM reviewq_request")}
        calls: dict[str, list[dict[str, Any]]] = {}
        for call in st.query("SELECT * FROM telemetry_modelcall ORDER BY created_at, id"):
            calls.setdefault(str(call["request_id"]), []).append(call)
        probes: dict[tuple[str, str], dict[str, Any]] = {}
        time.sleep(0.5)  # the probe flushes every 0.2 s
        for record in st.probe_records():
            probes[(record["kind"], record["key"].replace("-", ""))] = record
        report = analyse(args, warmups, results, rows, calls, probes)
        report["cpu_busy_share"] = busy
        report["process_cpu_ms_per_request"] = cpu_ms
        report["still_working_after_run"] = still_working
        if profiler is not None:
            report["profile"] = profile_report(profiler.path)
        st.stop()
        return report


def _db_id(st: Any, request_id: Any) -> str:
    """A request id as the database stores it (SQLite: 32 hex digits; PostgreSQL: a uuid)."""
    return str(request_id) if st.database == "postgres" else str(request_id).replace("-", "")


def _key(request_id: Any) -> str:
    return str(request_id).replace("-", "")


def analyse(
    args: argparse.Namespace,
    warmups: list[dict[str, Any]],
    results: list[dict[str, Any]],
    rows: dict[str, dict[str, Any]],
    calls: dict[str, list[dict[str, Any]]],
    probes: dict[tuple[str, str], dict[str, Any]],
) -> dict[str, Any]:
    rows = {_key(k): v for k, v in rows.items()}
    calls = {_key(k): v for k, v in calls.items()}
    released: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    other: list[dict[str, Any]] = []
    for result in results:
        row = rows.get(_key(result["id"]))
        if row is None:
            other.append({**result, "final": "no row"})
            continue
        request_calls = calls.get(_key(result["id"]), [])
        decision = json_field(row["decision"]) or {}
        item = {
            **result,
            "final": row["status"],
            "in_time": result["status"] == "released",
            "e2e": (result["received"] - result["sent"]) * 1000,
            "created": epoch(row["created_at"]),
            "finished": epoch(row["finished_at"]),
            "updated": epoch(row["updated_at"]),
            "model_rows": sum(float(c["latency_ms"]) for c in request_calls),
            "calls": [(c["purpose"], c["model_name"], round(float(c["latency_ms"]))) for c in request_calls],
            "tool": (json_field(row["proposal"]) or {}).get("tool_calls", [{}])[0].get("name"),
            "reason": decision.get("reason", ""),
            "trigger": decision.get("escalation_trigger"),
        }
        item["intake"] = (item["created"] - result["sent"]) * 1000
        pipeline = probes.get(("pipeline", _key(result["id"])))
        if pipeline:
            item["queueing"] = (pipeline["t_enter"] - item["created"]) * 1000
            for category in CATEGORIES:
                item[category] = pipeline["ms"].get(category, 0.0)
            item["respond"] = (result["received"] - pipeline["t_exit"]) * 1000
            item["llama"] = pipeline.get("model_calls", [])
        if row["status"] == "released":
            item["pipeline_rows"] = (item["finished"] - item["created"]) * 1000 - item["model_rows"]
            item["respond_rows"] = (result["received"] - item["finished"]) * 1000
            released.append(item)
        elif row["status"] == "awaiting_review":
            item["time_to_hold"] = (item["updated"] - result["sent"]) * 1000
            held.append(item)
        else:
            other.append(item)

    in_time = [r for r in released if r["in_time"]]
    counts = Counter(r["final"] for r in [*released, *held, *other])
    print()
    print(
        f"{len(results)} requests ({args.mode}, tools={args.tools}, wait_ms={args.wait_ms}): "
        f"auto-released {len(released)} ({len(in_time)} within wait_ms), held {len(held)}, "
        f"other {len(other)} "
        f"{dict(counts)}"
    )
    overall = [
        ("released (201 within wait_ms)", summary([r["e2e"] for r in in_time])),
        ("held: time to hold", summary([r["time_to_hold"] for r in held])),
        ("held: POST wall (waits wait_ms)", summary([r["e2e"] for r in held])),
    ]
    if warmups:
        cold = warmups[0]
        print(
            f"cold first request (prefix evaluation), sent -> decided: "
            f"{(cold['received'] - cold['sent']) * 1000:.0f} ms"
        )
    print(
        table(
            ["end to end, ms", "n", "p50", "p95", "mean", "max"],
            [
                (name, s.get("n", 0), s.get("p50"), s.get("p95"), s.get("mean"), s.get("max"))
                for name, s in overall
            ],
        )
    )
    split_rows = []
    components = ["e2e", "intake"]
    if in_time and "queueing" in in_time[0]:
        components += ["queueing", *CATEGORIES, "respond", "model_rows"]
    else:
        components += ["model_rows", "pipeline_rows", "respond_rows"]
    mean_e2e = statistics.fmean(r["e2e"] for r in in_time) if in_time else float("nan")
    split: dict[str, dict[str, float]] = {}
    for component in components:
        values = [r[component] for r in in_time if component in r]
        s = summary(values)
        split[component] = s
        if s.get("n"):
            share = 100 * s["mean"] / mean_e2e
            label = {"model_rows": "model (rows)", "db": "database"}.get(component, component)
            split_rows.append((label, s["p50"], s["p95"], s["mean"], f"{share:.0f}%"))
    if split_rows:
        print()
        print(table(["split of released requests, ms", "p50", "p95", "mean", "of mean e2e"], split_rows))
    llama = [call for r in in_time for call in r.get("llama", [])]
    if llama:
        prefill = summary([c["prefill_ms"] for c in llama])
        decode = summary([c["decode_ms"] for c in llama])
        evaluated = summary([c["prompt_tokens_evaluated"] for c in llama])
        batches = summary([c.get("decode_batches", 0) for c in llama])
        sources = Counter(c["reused"] for c in llama)
        # Prompt and decode evaluations, and how many of them ran on every core (machine idle).
        evaluations = sum(c.get("decode_batches", 0) + 1 for c in llama)
        on_idle = sum(c.get("evaluations_on_idle_threads", 0) for c in llama)
        print(
            f"llama.cpp per call: prefill p50 {prefill['p50']:.0f} ms, decode p50 {decode['p50']:.0f} ms "
            f"(p95 {decode['p95']:.0f}) in {batches['p50']:.0f} model evaluations (p50), "
            f"prompt tokens evaluated p50 {evaluated['p50']:.0f}, "
            f"reused {dict(sources)}; on every core (MODEL_THREADS_WHEN_IDLE): "
            f"about {100 * on_idle / max(evaluations, 1):.0f}% of evaluations"
        )
    tools_chosen = Counter(r["tool"] for r in [*released, *held])
    print(f"tools proposed: {dict(tools_chosen)}")
    if held:
        reasons = Counter((r["trigger"], r["reason"][:110]) for r in held)
        print("held, by reason:")
        for (trigger, reason), n in reasons.most_common(8):
            print(f"  {n:4d}  [{trigger}] {reason}")
        print(f"held requests' model calls: {Counter(len(r['calls']) for r in held)} (calls per request)")
    return {
        "machine": machine(),
        "args": vars(args),
        "counts": {
            "released": len(released),
            "released_in_time": len(in_time),
            "held": len(held),
            "other": len(other),
        },
        "overall": dict(overall),
        "split": split,
        "cold_ms": (warmups[0]["received"] - warmups[0]["sent"]) * 1000 if warmups else None,
        "tools_chosen": dict(tools_chosen),
        "held": [{k: r.get(k) for k in ("id", "time_to_hold", "calls", "trigger", "reason")} for r in held],
        "other": [{k: r.get(k) for k in ("id", "final", "http", "status", "calls")} for r in other],
        "requests": [{k: v for k, v in r.items() if k not in ("llama",)} for r in [*released, *held, *other]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--tools", choices=["all", "read"], default="read")
    parser.add_argument("--mode", choices=["embedded", "services"], default="embedded")
    parser.add_argument("--message", default="Get order details for order_id=#W{n}")
    parser.add_argument("--wait-ms", type=int, default=10000)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--model-threads", type=int, default=0, help="MODEL_THREADS (default: product's)")
    parser.add_argument(
        "--model-threads-when-idle",
        type=int,
        default=None,
        help="MODEL_THREADS_WHEN_IDLE (default: product's, every core; 0: never more than MODEL_THREADS)",
    )
    parser.add_argument(
        "--busy-neighbour", action="store_true", help="keep one core busy with another process meanwhile"
    )
    parser.add_argument(
        "--no-probe", dest="probe", action="store_false", help="servers without bench/probe.py"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the pipeline's process during the run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = parser.parse_args()
    report = run(args)
    if report.get("profile"):
        print_profile(report["profile"], "py-spy profile of the pipeline process")
    print(f"CPU busy (all cores, other work included) during the run: {100 * report['cpu_busy_share']:.0f}%")
    per_request = ", ".join(
        f"{name} {ms:.0f} ms" for name, ms in report["process_cpu_ms_per_request"].items()
    )
    print(f"CPU time per request (user + system, all threads; models included): {per_request}")
    path = write_results(f"routine_latency-{args.mode}-{args.tools}", report)
    print(f"wrote {path.relative_to(path.parent.parent.parent)}")


if __name__ == "__main__":
    main()

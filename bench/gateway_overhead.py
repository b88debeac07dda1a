"""Gateway overhead and intake throughput: what reviewq itself adds, with the fake model.

    .venv/bin/python bench/gateway_overhead.py [--requests 300] [--modes embedded,services]
        [--workers 1,2] [--connections 16] [--duration 10] [--conn-max-age 0] [--profile]
        [--worker-pool prefork|solo] [--shared-socket]

Overhead (REVIEWQ_MODEL_BACKEND=fake, the deterministic stand-in, which answers in well under a
millisecond): one request at a time, POST /api/v1/requests with ``wait_ms`` and the 8 read-only
retail tools; ``overhead = end-to-end wall time at the client - the model's own latency`` (the
sum of the request's ModelCall.latency_ms). Each mode runs twice: a clean pass (plain uvicorn /
celery: the headline figures) and a pass under bench/probe.py that splits the time (intake,
queueing, routing, validation, database, respond: see routine_latency.py for the definitions).
``--profile`` adds py-spy profiles of the web process (and the worker) during the probe pass.

- ``embedded``: uvicorn alone, SQLite, pipeline in the web process's thread pool;
- ``services``: uvicorn + a Celery worker (prefork, concurrency 1), PostgreSQL, Redis.

Intake throughput: PostgreSQL + Redis with Celery dispatch (``run_pipeline.delay`` to Redis) and
no worker running, so the figure is what the web tier accepts; POST without ``wait_ms`` (202),
``--connections`` keep-alive connections for ``--duration`` seconds, generated on 127.0.0.1 by
``wrk`` (C, one thread, a Lua POST script; apt-get install wrk) or, without wrk, a Python asyncio
client. The web tier runs with each of ``--workers`` processes (one: uvicorn; more:
``python -m reviewq.runtime.serve``, one SO_REUSEPORT socket per process; ``--shared-socket``: uvicorn's
own ``--workers``); ``--conn-max-age`` tries values of Django's
DB_CONN_MAX_AGE (the product default is 0: a new database connection per request). Accepted =
Request rows committed during the window (checked against the client's 202 count). CPU seconds
of the web processes, PostgreSQL, Redis and the load generator are read from /proc, so "CPU ms
per request" can be compared across runs on this shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from harness import (
    READ_TOOLS,
    Client,
    CpuMeter,
    Profiler,
    Stack,
    child_pids,
    epoch,
    free_port,
    have,
    machine,
    print_profile,
    process_cpu_seconds,
    profile_report,
    request_body,
    stack,
    summary,
    table,
    wait_until_idle,
    write_results,
)

MESSAGE = "Get order details for order_id=#W{n}"
CATEGORIES = ("routing", "model", "validation", "db", "connect", "telemetry", "webhook", "other")


# --- Overhead ---


def overhead_pass(
    st: Stack, key: str, args: argparse.Namespace, *, probe: bool, label: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    services = st.redis
    port = free_port()
    server = st.start_uvicorn(port, probe=probe)
    worker = st.start_celery(probe=probe, pool=args.worker_pool) if services else None
    client = Client(port, key)
    for index in range(20):  # warm-up: imports, template and grammar caches, connections
        client.request(
            "POST", "/api/v1/requests", request_body(MESSAGE.format(n=index), READ_TOOLS, wait_ms=5000)
        )
    wait_until_idle(st, 30)
    profilers = []
    if args.profile and probe:
        profilers.append(("web", Profiler(server.pid, st.data_dir / f"profile-web-{label}.txt")))
        if worker is not None:
            target = (child_pids(worker.pid) or [worker.pid])[0]
            profilers.append(("worker", Profiler(target, st.data_dir / f"profile-worker-{label}.txt")))
    results = []
    server_cpu = process_cpu_seconds(server.pid)
    for index in range(args.requests):
        body = request_body(MESSAGE.format(n=2378156 + 7919 * index), READ_TOOLS, wait_ms=5000)
        sent = time.time()
        status, answer = client.request("POST", "/api/v1/requests", body)
        received = time.time()
        results.append(
            {
                "sent": sent,
                "received": received,
                "http": status,
                "status": answer.get("status"),
                "id": answer.get("id"),
            }
        )
    server_cpu = process_cpu_seconds(server.pid) - server_cpu
    profiles = {}
    for name, profiler in profilers:
        profiler.stop()
        profiles[name] = profile_report(profiler.path)
    client.close()
    wait_until_idle(st, 30)
    time.sleep(0.5)
    st.stop(server)
    if worker is not None:
        st.stop(worker)
    return results, {"server_cpu_ms_per_request": 1000 * server_cpu / len(results), "profiles": profiles}


def analyse_overhead(st: Stack, results: list[dict[str, Any]], with_probe: bool) -> dict[str, Any]:
    ids = [r["id"] for r in results]
    rows = {
        str(r["id"]).replace("-", ""): r
        for r in st.query("SELECT id, status, created_at, finished_at FROM reviewq_request")
    }
    model: dict[str, float] = {}
    for call in st.query("SELECT request_id, latency_ms FROM telemetry_modelcall"):
        key = str(call["request_id"]).replace("-", "")
        model[key] = model.get(key, 0.0) + float(call["latency_ms"])
    records = st.probe_records() if with_probe else []
    probes = {(p["kind"], p["key"].replace("-", "")): p for p in records}
    items = []
    for result, request_id in zip(results, ids, strict=True):
        key = str(request_id).replace("-", "")
        row = rows.get(key)
        if row is None or row["status"] != "released" or result["http"] != 201:
            continue
        e2e = (result["received"] - result["sent"]) * 1000
        created = epoch(row["created_at"])
        item = {
            "e2e": e2e,
            "model": model.get(key, 0.0),
            "overhead": e2e - model.get(key, 0.0),
            "intake": (created - result["sent"]) * 1000,
            "pipeline (rows)": (epoch(row["finished_at"]) - created) * 1000 - model.get(key, 0.0),
            "respond (rows)": (result["received"] - epoch(row["finished_at"])) * 1000,
        }
        pipeline = probes.get(("pipeline", key))
        if pipeline:
            item["queueing"] = (pipeline["t_enter"] - created) * 1000
            for category in CATEGORIES:
                item[category] = pipeline["ms"].get(category, 0.0)
            item["respond"] = (result["received"] - pipeline["t_exit"]) * 1000
        intake = probes.get(("intake", key))
        if intake:
            item["request_create"] = (intake["t_exit"] - intake["t_enter"]) * 1000
            item["request_create db"] = intake["ms"].get("db", 0.0)
            item["before request_create"] = (intake["t_enter"] - result["sent"]) * 1000
        wait = probes.get(("wait", key))
        if wait:
            item["wait reads"] = float(wait["counts"].get("db", 0))
            item["after wait"] = (result["received"] - wait["t_exit"]) * 1000
        items.append(item)
    # The last pass's auth spans (the probe file also holds earlier passes' warm-ups).
    auth = [
        sum(p["ms"].values()) for p in records if p["kind"] == "auth" and p["t_enter"] >= results[0]["sent"]
    ]
    fields = list(items[0]) if items else []
    return {
        "released": len(items),
        "of": len(results),
        "components": {f: summary([i[f] for i in items if f in i]) for f in fields},
        "auth_ms": summary(auth),
    }


def print_overhead(mode: str, clean: dict[str, Any], probed: dict[str, Any]) -> None:
    c = clean["components"]
    print(
        f"\n{mode}: {clean['released']}/{clean['of']} released; "
        f"server CPU {clean['server_cpu_ms_per_request']:.1f} ms/request"
    )
    rows = [
        (name, c[name]["p50"], c[name]["p95"], c[name]["mean"])
        for name in ("e2e", "model", "overhead")
        if c.get(name, {}).get("n")
    ]
    print(table([f"{mode}, clean pass (ms)", "p50", "p95", "mean"], rows))
    p = probed["components"]
    order = [
        "e2e",
        "overhead",
        "intake",
        "before request_create",
        "request_create",
        "request_create db",
        "queueing",
        *CATEGORIES,
        "respond",
        "after wait",
        "wait reads",
    ]
    rows = [
        (name, p[name]["p50"], p[name]["p95"], p[name]["mean"]) for name in order if p.get(name, {}).get("n")
    ]
    if probed["auth_ms"].get("n"):
        a = probed["auth_ms"]
        rows.append((f"auth lookups (cache misses: {a['n']})", a["p50"], a["p95"], a["mean"]))
    print(table([f"{mode}, probe pass split (ms)", "p50", "p95", "mean"], rows))


# --- Intake throughput ---


def postgres_cpu_seconds() -> float:
    """CPU of the postmaster and all its backends, including backends that already exited (cutime)."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            head, _, tail = (entry / "stat").read_text().rpartition(")")
        except OSError:
            continue
        if not head.endswith("(postgres"):
            continue
        parts = tail.split()
        total += (int(parts[11]) + int(parts[12])) / ticks
        parent = Path(f"/proc/{parts[1]}/comm")
        if not (parent.exists() and parent.read_text().strip() == "postgres"):  # the postmaster
            total += (int(parts[13]) + int(parts[14])) / ticks
    return total


def command_cpu_seconds(name: str) -> float:
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    total += process_cpu_seconds(int(entry.name))
            except OSError:
                continue
    return total


def tree_cpu_seconds(pid: int) -> float:
    return process_cpu_seconds(pid) + sum(process_cpu_seconds(child) for child in child_pids(pid))


def run_wrk(
    port: int, key: str, body: dict[str, Any], connections: int, duration: float, workdir: Path
) -> dict[str, Any]:
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    )
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s", "--latency", "-s", str(script)]
    process = subprocess.Popen(
        [*argv, f"http://127.0.0.1:{port}/api/v1/requests"], stdout=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(process.pid, 0)
    output = process.stdout.read() if process.stdout else ""
    process.returncode = os.waitstatus_to_exitcode(status)

    def number(pattern: str) -> float:
        match = re.search(pattern, output)
        return float(match.group(1)) if match else float("nan")

    def ms(value: str, unit: str) -> float:
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    latency = {
        f"p{q}": ms(v, u) for q, v, u in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)", output, re.M)
    }
    total = number(r"(\d+) requests in")
    non2xx = number(r"Non-2xx or 3xx responses: (\d+)")
    return {
        "client": "wrk",
        "responses": total,
        "non_2xx": 0.0 if non2xx != non2xx else non2xx,
        "responses_per_s": number(r"Requests/sec:\s+([\d.]+)"),
        "latency_ms": latency,
        "client_cpu_s": usage.ru_utime + usage.ru_stime,
        "output": output,
    }


async def _python_load(
    port: int, key: str, body: dict[str, Any], connections: int, duration: float
) -> dict[str, Any]:
    payload = json.dumps(body).encode()
    request = (
        f"POST /api/v1/requests HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    deadline = time.monotonic() + duration
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
        writer.close()

    started = time.monotonic()
    await asyncio.gather(*(connection() for _ in range(connections)))
    elapsed = time.monotonic() - started
    return {
        "client": "python-asyncio",
        "responses": len(latencies),
        "non_2xx": sum(n for s, n in statuses.items() if not 200 <= s < 300),
        "responses_per_s": len(latencies) / elapsed,
        "latency_ms": {
            "p50": statistics.median(latencies),
            "p90": sorted(latencies)[int(0.9 * len(latencies))],
        },
    }


def python_load(
    port: int, key: str, body: dict[str, Any], connections: int, duration: float
) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = asyncio.run(_python_load(port, key, body, connections, duration))
    after = resource.getrusage(resource.RUSAGE_SELF)
    result["client_cpu_s"] = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return result


def intake_window(
    st: Stack,
    key: str,
    body: dict[str, Any],
    args: argparse.Namespace,
    workers: int,
    conn_max_age: int,
    use_wrk: bool,
    variant: str,
) -> dict[str, Any]:
    """One measured window: the web tier with ``workers`` processes, warmed up, then loaded."""

    def load(duration: float) -> dict[str, Any]:
        if use_wrk:
            return run_wrk(port, key, body, args.connections, duration, st.data_dir)
        return python_load(port, key, body, args.connections, duration)

    def count(sql: str) -> int:
        return int(st.query(sql)[0]["n"])

    port = free_port()
    server = st.start_uvicorn(
        port, workers=workers, shared_socket=args.shared_socket, DB_CONN_MAX_AGE=str(conn_max_age)
    )
    try:
        time.sleep(1.0 if workers == 1 else 3.0)  # let every worker process finish starting
        load(2)  # warm-up: each worker imports, connects and fills its caches before the window
        before_rows = count("SELECT COUNT(*) AS n FROM reviewq_request")
        cpu = CpuMeter()
        web_cpu, pg_cpu = tree_cpu_seconds(server.pid), postgres_cpu_seconds()
        redis_cpu = command_cpu_seconds("redis-server")
        started = time.monotonic()
        result = load(args.duration)
        elapsed = time.monotonic() - started
        busy = cpu.busy_share()
        web_cpu = tree_cpu_seconds(server.pid) - web_cpu
        pg_cpu = postgres_cpu_seconds() - pg_cpu
        redis_cpu = command_cpu_seconds("redis-server") - redis_cpu
        accepted = count("SELECT COUNT(*) AS n FROM reviewq_request") - before_rows
        # Connections the web tier still holds after the window (a leak shows here); minus this query's.
        still_open = (
            count("SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database()") - 1
        )
    finally:
        st.stop(server)
    per_request = max(accepted, 1)
    print(
        f"  [{variant}] workers={workers} conn_max_age={conn_max_age}: "
        f"{accepted} accepted in {elapsed:.1f} s "
        f"= {accepted / elapsed:.0f}/s ({result['client']} saw {result['responses']:.0f}, "
        f"non-2xx {result['non_2xx']:.0f}); CPU busy {100 * busy:.0f}%; "
        f"{still_open} PostgreSQL connections still open"
    )
    return {
        "workers": workers,
        "conn_max_age": conn_max_age,
        "pg_variant": variant,
        "connections": args.connections,
        "duration_s": elapsed,
        "accepted": accepted,
        "accepted_per_s": accepted / elapsed,
        "pg_connections_open_after": still_open,
        "cpu_busy_share": busy,
        "web_cpu_ms_per_request": 1000 * web_cpu / per_request,
        "postgres_cpu_ms_per_request": 1000 * pg_cpu / per_request,
        "redis_cpu_ms_per_request": 1000 * redis_cpu / per_request,
        "client_cpu_ms_per_request": 1000 * result["client_cpu_s"] / per_request,
        **{k: v for k, v in result.items() if k != "output"},
    }


def intake(args: argparse.Namespace) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    body = request_body("Get order details for order_id=#W2378156", READ_TOOLS)
    use_wrk = have("wrk") and not args.python_client
    for variant in args.pg_variants:
        with stack(
            "intake",
            database="postgres",
            redis=True,
            model_backend="fake",
            keep=args.keep,
            extra_env=pg_env(variant),
        ) as st:
            key = st.seed()
            for conn_max_age in args.conn_max_age:
                for workers in args.workers:
                    try:
                        window = intake_window(st, key, body, args, workers, conn_max_age, use_wrk, variant)
                    except Exception as exc:  # noqa: BLE001 - record the failure, go on with the next one
                        print(f"  [{variant}] workers={workers} conn_max_age={conn_max_age}: failed: {exc}")
                        window = {"workers": workers, "conn_max_age": conn_max_age, "error": str(exc)}
                    results.append(window)
    if args.profile:
        with stack(
            "intake_profile", database="postgres", redis=True, model_backend="fake", keep=args.keep
        ) as st:
            key = st.seed()
            port = free_port()
            server = st.start_uvicorn(port, workers=1, DB_CONN_MAX_AGE=str(args.conn_max_age[0]))
            time.sleep(1.0)
            profiler = Profiler(server.pid, st.data_dir / "profile-intake.txt")
            if use_wrk:
                run_wrk(port, key, body, args.connections, min(args.duration, 8), st.data_dir)
            else:
                python_load(port, key, body, args.connections, min(args.duration, 8))
            profiler.stop()
            st.stop(server)
            report = profile_report(profiler.path)
            print_profile(report, "py-spy profile of the web process under intake load (1 worker)")
            results.append({"profile": report})
    return results


def pg_env(variant: str) -> dict[str, str]:
    """The environment that runs the servers with bench/pg_variants.py (``default``: the product's)."""
    if variant == "default":
        return {}
    return {"DJANGO_SETTINGS_MODULE": "bench.pg_variants", "BENCH_PG_VARIANT": variant}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--modes", default="embedded,services", help="overhead modes; empty: skip")
    parser.add_argument(
        "--workers",
        default="1,2",
        help="web processes for intake (1: uvicorn, more: reviewq.runtime.serve); empty: skip",
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument(
        "--conn-max-age",
        default="0",
        help="DB_CONN_MAX_AGE values for intake (the product's default is 0; >0 leaks a connection per "
        "request under ASGI until PostgreSQL refuses clients: do not use on a shared server)",
    )
    parser.add_argument(
        "--python-client", action="store_true", help="asyncio load generator even if wrk exists"
    )
    parser.add_argument(
        "--pg-variants",
        default="default",
        help="services overhead and intake, once per variant (comma-separated): default (the product's "
        "settings), or bench/pg_variants.py's pool, async_commit, pool+async_commit",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy profiles of the servers")
    parser.add_argument(
        "--worker-pool", default="prefork", help="the services mode's Celery pool (the product's: prefork)"
    )
    parser.add_argument(
        "--shared-socket",
        action="store_true",
        help="intake with several processes as `uvicorn --workers N` on one socket (not reviewq's serve)",
    )
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    args.workers = [int(w) for w in args.workers.split(",") if w]
    args.conn_max_age = [int(c) for c in args.conn_max_age.split(",") if c]
    args.pg_variants = [v for v in args.pg_variants.split(",") if v]
    report: dict[str, Any] = {"machine": machine(), "args": vars(args), "overhead": {}, "intake": []}

    runs = [
        (mode, variant)
        for mode in args.modes
        for variant in (args.pg_variants if mode == "services" else ["default"])
    ]
    for mode, variant in runs:
        services = mode == "services"
        label = mode if variant == "default" else f"{mode} [{variant}]"
        with stack(
            f"overhead_{mode}",
            database="postgres" if services else "sqlite",
            redis=services,
            keep=args.keep,
            extra_env=pg_env(variant) if services else {},
        ) as st:
            key = st.seed()
            clean_results, clean_extra = overhead_pass(st, key, args, probe=False, label="clean")
            clean = {**analyse_overhead(st, clean_results, False), **clean_extra}
            probed_results, probed_extra = overhead_pass(st, key, args, probe=True, label="probe")
            probed = {**analyse_overhead(st, probed_results, True), **probed_extra}
            print_overhead(label, clean, probed)
            for name, profile in probed_extra["profiles"].items():
                print_profile(profile, f"py-spy profile, {label} {name} process (probe pass)")
            report["overhead"][label] = {"clean": clean, "probe": probed}

    if args.workers:
        print(
            "\nintake throughput on PostgreSQL, Celery dispatch to Redis, no worker, "
            f"{args.connections} connections:"
        )
        report["intake"] = intake(args)
        rows = [
            (
                f"[{r['pg_variant']}] workers={r['workers']} conn_max_age={r['conn_max_age']}",
                r["accepted_per_s"],
                r["latency_ms"].get("p50", float("nan")),
                r["latency_ms"].get("p99", r["latency_ms"].get("p90", float("nan"))),
                r["web_cpu_ms_per_request"],
                r["postgres_cpu_ms_per_request"],
                r["redis_cpu_ms_per_request"],
                r["client_cpu_ms_per_request"],
                f"{100 * r['cpu_busy_share']:.0f}%",
            )
            for r in report["intake"]
            if "accepted_per_s" in r
        ]
        print(
            table(
                [
                    "intake (202)",
                    "req/s",
                    "p50 ms",
                    "p99 ms",
                    "web CPU ms/req",
                    "pg",
                    "redis",
                    "client",
                    "CPU busy",
                ],
                rows,
            )
        )
    path = write_results("gateway_overhead", report)
    print(f"\nwrote {path.relative_to(path.parent.parent.parent)}")


if __name__ == "__main__":
    main()

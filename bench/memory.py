"""Memory: resident size of a worker with the local models loaded, and of the web process.

    .venv/bin/python bench/memory.py [--modes services,embedded]

Reads /proc/<pid>/status (VmRSS = RssAnon + RssFile + RssShmem, VmHWM = peak RSS) and
/proc/<pid>/smaps_rollup (Pss: shared pages divided among the processes sharing them; the GGUF
files are mmapped, so their pages are RssFile and shared between processes that map them).

The models are loaded the way the product loads them, by real requests through the pipeline
(REVIEWQ_MODEL_BACKEND=real) against a fresh database seeded with one extra risk policy,
``bench: adjudicate order lookups`` (get_order_details -> adjudicate), so that:

1. a classification request (labels, a short prompt) makes the pipeline load the cheapest rung,
   Qwen2.5-Coder-0.5B;
2. a request with all 16 retail tools (more than the 0.5B serves) loads Qwen2.5-Coder-1.5B;
3. "Get order details for order_id=#W..." with the 8 read-only retail tools is proposed by the
   0.5B and adjudicated by Gemma-3-270M, which loads it.
The ModelCall rows confirm which models ran.

- ``services``: PostgreSQL + Redis; uvicorn (no models) and a Celery worker as the Makefile runs
  it (prefork, concurrency 1: a parent process and one child that loads the models). The web
  process is measured idle and after some API traffic.
- ``embedded``: one uvicorn process, SQLite; its scheduler loads both tool-use rungs at start-up,
  Gemma loads on the first adjudication.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from harness import (
    READ_TOOLS,
    RETAIL_TOOLS,
    ROOT,
    Client,
    Stack,
    child_pids,
    free_port,
    machine,
    memory_of,
    request_body,
    stack,
    table,
    wait_until_idle,
    write_results,
)

ADJUDICATE_POLICY = """
from reviewq.models import RiskPolicy
RiskPolicy.objects.update_or_create(
    name="bench: adjudicate order lookups",
    defaults={"priority": 1, "tool_pattern": "get_order_details", "decision": "adjudicate"},
)
"""
CLASSIFY = {
    "messages": [{"role": "user", "content": "Where is my parcel? It was due yesterday."}],
    "labels": ["order_status", "refund", "other"],
    "wait_ms": 30000,
}


# More tools than the 0.5B rung serves (max_tools 8): the 1.5B proposes.
AGENT_SIZED = request_body("Get order details for order_id=#W2378156", RETAIL_TOOLS, wait_ms=120000)


def adjudicated(index: int) -> dict[str, Any]:
    return request_body(f"Get order details for order_id=#W{2378156 + index}", READ_TOOLS, wait_ms=30000)


def models_used(st: Stack) -> list[str]:
    return sorted(
        {row["model_name"] for row in st.query("SELECT DISTINCT model_name FROM telemetry_modelcall")}
    )


def load_gemma(st: Stack, client: Client) -> int:
    """Posts order lookups until one reaches the adjudicator (the model may propose another tool)."""
    for attempt in range(1, 6):
        client.request("POST", "/api/v1/requests", adjudicated(attempt))
        wait_until_idle(st, 240)
        if any("gemma" in name for name in models_used(st)):
            return attempt
    return 0


def snapshot(label: str, processes: dict[str, int]) -> dict[str, Any]:
    return {"label": label, "processes": {name: memory_of(pid) for name, pid in processes.items()}}


def services(args: argparse.Namespace) -> list[dict[str, Any]]:
    snapshots = []
    with stack(
        "memory_services", database="postgres", redis=True, model_backend="real", keep=args.keep
    ) as st:
        key = st.seed()
        st.shell(ADJUDICATE_POLICY)
        port = free_port()
        web = st.start_uvicorn(port)
        worker = st.start_celery()
        time.sleep(2)
        child = (child_pids(worker.pid) or [worker.pid])[0]
        names = {"web (uvicorn)": web.pid, "worker parent": worker.pid, "worker child": child}
        snapshots.append(snapshot("idle, no model loaded", names))
        client = Client(port, key)
        client.request("POST", "/api/v1/requests", CLASSIFY)
        wait_until_idle(st, 240)
        snapshots.append(snapshot(f"after the 0.5B ({', '.join(models_used(st))})", names))
        client.request("POST", "/api/v1/requests", AGENT_SIZED)
        wait_until_idle(st, 600)
        snapshots.append(snapshot(f"after the 1.5B too ({', '.join(models_used(st))})", names))
        attempts = load_gemma(st, client)
        snapshots.append(snapshot(f"after Gemma too ({', '.join(models_used(st))}; {attempts} tries)", names))
        for index in range(args.web_requests):  # web traffic: reads and 202 intakes
            client.request("GET", "/api/v1/requests/00000000-0000-0000-0000-000000000000")
            if index % 10 == 0:
                client.request("POST", "/api/v1/requests", {**CLASSIFY, "wait_ms": 0})
        snapshots.append(
            snapshot(f"web after {args.web_requests} GETs + {args.web_requests // 10} POSTs", names)
        )
        client.close()
    return snapshots


def embedded(args: argparse.Namespace) -> list[dict[str, Any]]:
    snapshots = []
    with stack("memory_embedded", database="sqlite", model_backend="real", keep=args.keep) as st:
        key = st.seed()
        st.shell(ADJUDICATE_POLICY)
        port = free_port()
        web = st.start_uvicorn(port)
        st.wait_log(f"uvicorn-{port}", "loaded qwen2.5-coder-1.5b-instruct", web, timeout=300)
        names = {"embedded (uvicorn + models)": web.pid}
        snapshots.append(snapshot("after start-up (the scheduler loaded both Qwen rungs)", names))
        client = Client(port, key)
        client.request("POST", "/api/v1/requests", CLASSIFY)
        wait_until_idle(st, 240)
        snapshots.append(snapshot(f"after a proposal ({', '.join(models_used(st))})", names))
        attempts = load_gemma(st, client)
        snapshots.append(snapshot(f"after Gemma too ({', '.join(models_used(st))}; {attempts} tries)", names))
        client.close()
    return snapshots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="services,embedded")
    parser.add_argument("--web-requests", type=int, default=100)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    report: dict[str, Any] = {"machine": machine(), "args": vars(args), "modes": {}}
    rows = []
    for mode in [m for m in args.modes.split(",") if m]:
        snapshots = services(args) if mode == "services" else embedded(args)
        report["modes"][mode] = snapshots
        for snap in snapshots:
            for name, mem in snap["processes"].items():
                rows.append(
                    (
                        f"{mode}: {name}",
                        snap["label"][:70],
                        mem.get("VmRSS"),
                        mem.get("RssAnon"),
                        mem.get("RssFile"),
                        mem.get("Pss"),
                        mem.get("VmHWM"),
                    )
                )
    print()
    print(table(["process", "when", "RSS MiB", "anon", "file", "PSS", "peak RSS"], rows))
    # The model files as loaded: assembled from their parts under .data/models/.
    sizes = {
        path.name: path.stat().st_size / 2**20 for path in sorted((ROOT / ".data" / "models").glob("*.gguf"))
    }
    print("model files (MiB): " + ", ".join(f"{n} {s:.0f}" for n, s in sizes.items() if s))
    report["model_file_mib"] = sizes
    path = write_results("memory", report)
    print(f"wrote {path.relative_to(path.parent.parent.parent)}")


if __name__ == "__main__":
    main()

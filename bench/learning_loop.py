"""The learning loop over simulated weeks: does the cheapest rung learn from the ladder's traces?

    .venv/bin/python bench/learning_loop.py [--cycles 3] [--week 24] [--dev 12] [--steps 12]
        [--threshold 0.3] [--threads 2] [--data ../shared/workloads/tau-bench-retail]

Routine reads from the τ-bench retail domain, as an agent sends them with the 8 read-only tools:
each task gives two requests, the customer's opening message (the gold action authenticates them:
``find_user_id_by_name_zip`` or ``find_user_id_by_email``, the values taken from the domain's
users) and, after that call's result, the next lookup (``get_order_details`` for the order the
customer names, else ``get_user_details``). They go through the real pipeline: the cheapest rung
(Qwen2.5-Coder-0.5B) alone as the small model, an uncertainty threshold (``--threshold``) that
sends doubtful answers up, and the LLM rung played by a fake Anthropic server that answers the
gold call at Claude's prices (bench/cost_ratio.py's). The read-only policy releases reads, so no
human is needed; the LLM's released answers are the traces the loop learns from.

Cycle 0 is today's ladder. After each week (``--week`` requests from the train tasks) it builds
a dataset, trains an adapter for the 0.5B on it (``--steps`` LoRA steps), replays it on the
held-out rows and promotes it when replay allows. Every cycle is evaluated on the same dev
requests (``--dev``, from the dev tasks), with the adapter the previous cycle promoted. It prints,
per cycle: escalation rate, share answered by the cheapest rung, auto-released share, released
accuracy, human decisions, cost against all-LLM (the same dev requests with the small model
switched off), p50 latency, and the training time and adapter size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bfcl_common as bc
from cost_ratio import gold_server
from harness import table
from retail import first_person

CHEAPEST = "qwen2.5-coder-0.5b-instruct"
ORDER_ID = re.compile(r"#W\d{7}")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


def requests_from(tasks: list[dict[str, Any]], users: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """Two routine reads per task (see the module docstring), each with its gold call."""
    built: list[dict[str, Any]] = []
    for number, task in enumerate(tasks):
        if len(built) >= limit:
            break
        instruction = task["instruction"]
        user_id = task.get("user_id") or next(
            (
                uid
                for uid, user in users.items()
                if f"{user['name']['first_name']} {user['name']['last_name']}" in instruction
            ),
            None,
        )
        if user_id is None or user_id not in users:
            continue
        user = users[user_id]
        opening = [{"role": "user", "content": first_person(instruction)}]
        email = EMAIL.search(instruction)
        if email and email.group() == user["email"]:
            first = {"name": "find_user_id_by_email", "arguments": {"email": user["email"]}}
        elif user["address"]["zip"] in instruction:
            first = {
                "name": "find_user_id_by_name_zip",
                "arguments": {
                    "first_name": user["name"]["first_name"],
                    "last_name": user["name"]["last_name"],
                    "zip": user["address"]["zip"],
                },
            }
        else:
            continue
        call_id = f"call_{number}"
        answered = [
            *opening,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": first["name"], "arguments": json.dumps(first["arguments"])},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": user_id},
        ]
        order = ORDER_ID.search(instruction)
        second = (
            {"name": "get_order_details", "arguments": {"order_id": order.group()}}
            if order
            else {"name": "get_user_details", "arguments": {"user_id": user_id}}
        )
        built += [{"messages": opening, "gold": first}, {"messages": answered, "gold": second}]
    return built[:limit]


def run_requests(
    harness: bc.Harness,
    server: Any,
    requests: list[dict[str, Any]],
    tools: list[Any],
    *,
    held_out: bool = False,
) -> list[dict]:
    """Each request through the pipeline; what happened to it. ``held_out`` (the dev requests):
    deleted once measured, so no dataset ever trains on them."""
    from reviewq.services.intake import request_create
    from router.contracts import Agreement
    from router.openai_actions import compare_answers
    from telemetry.models import ModelCall

    rows = []
    for request_spec in requests:
        gold = request_spec["gold"]
        server.gold = [gold]
        started = time.perf_counter()
        request, _ = request_create(
            agent_key=harness.agent_key, payload={"messages": request_spec["messages"], "tools": tools}
        )
        request.refresh_from_db()
        seconds = time.perf_counter() - started
        calls = list(ModelCall.objects.filter(request=request))
        released = request.status == "released"
        expected = {"type": "tool_calls", "tool_calls": [gold]}
        rows.append(
            {
                "released": released,
                "tier": (request.decision or {}).get("tier"),
                "model": (request.decision or {}).get("model"),
                "correct": released and compare_answers(expected, request.action) == Agreement.AGREES,
                "escalated": any(call.escalated for call in calls)
                or any(call.tier == "llm" for call in calls),
                "held": request.status == "awaiting_review",
                "cost": float(sum(call.cost_usd for call in calls)),
                "seconds": seconds,
            }
        )
        if held_out:
            request.delete()
    return rows


def summary(rows: list[dict], baseline_cost: float | None) -> dict[str, Any]:
    n = len(rows) or 1
    released = [r for r in rows if r["released"]]
    cost = sum(r["cost"] for r in rows)
    return {
        "requests": len(rows),
        "escalation": sum(r["escalated"] for r in rows) / n,
        "cheapest_rung": sum(r["released"] and r["tier"] == "slm" for r in rows) / n,
        "auto_released": len(released) / n,
        "released_accuracy": sum(r["correct"] for r in released) / len(released) if released else None,
        "human_decisions": sum(r["held"] for r in rows),
        "cost": cost,
        "saving": baseline_cost / cost if baseline_cost and cost else None,
        "p50_s": statistics.median(r["seconds"] for r in rows) if rows else None,
    }


def set_small_model(enabled: bool) -> None:
    from router.models import ModelSpec

    if enabled:
        bc.use_proposers([CHEAPEST])
    else:
        ModelSpec.objects.filter(tier="slm", name=CHEAPEST).update(enabled=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=3, help="weeks of traffic, each followed by a training")
    parser.add_argument("--week", type=int, default=24, help="requests per week (train tasks)")
    parser.add_argument("--dev", type=int, default=12, help="dev requests, the same every cycle")
    parser.add_argument("--steps", type=int, default=12, help="LoRA steps per training")
    parser.add_argument("--threshold", type=float, default=0.3, help="tool_use uncertainty threshold")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--data", default=str(Path(__file__).resolve().parents[2] / "shared/workloads/tau-bench-retail")
    )
    args = parser.parse_args()
    os.environ["MODEL_THREADS"] = str(args.threads)
    harness = bc.setup_django(anthropic_key="sk-bench-not-a-real-key")
    from reviewq.config.demo import retail_tools, seed_policies, seed_retail_tools
    from reviewq.errors import ApplicationError
    from reviewq.services import learning
    from router.models import EscalationPolicy, ModelSpec
    from router.training import TrainingConfig
    from telemetry.datasets import DatasetOptions, build_dataset

    data = Path(args.data)
    users = json.loads((data / "users.json").read_text())
    train_requests = requests_from(
        json.loads((data / "retail_tasks_train.json").read_text()), users, args.week * args.cycles
    )
    dev_requests = requests_from(json.loads((data / "retail_tasks_dev.json").read_text()), users, args.dev)
    seed_retail_tools()
    seed_policies()
    tools = [t for t in retail_tools() if t["function"]["name"] in bc_read_tools()]
    server = gold_server()
    ModelSpec.objects.filter(tier="llm").update(enabled=True, base_url=server.base_url)
    EscalationPolicy.objects.update_or_create(
        task_type="tool_use", defaults={"uncertainty_threshold": args.threshold, "max_slm_retries": 1}
    )
    print(
        f"learning loop: {args.cycles} cycles of {args.week} requests, {len(dev_requests)} dev requests, "
        f"{args.steps} steps per training, threshold {args.threshold}",
        flush=True,
    )
    started = time.perf_counter()
    try:
        set_small_model(False)
        baseline = summary(run_requests(harness, server, dev_requests, tools, held_out=True), None)
        set_small_model(True)
        cycles: list[dict[str, Any]] = []
        for cycle in range(args.cycles + 1):
            dev = summary(run_requests(harness, server, dev_requests, tools, held_out=True), baseline["cost"])
            record: dict[str, Any] = {"cycle": cycle, "dev": dev}
            print(f"cycle {cycle}: {json.dumps(dev)}", flush=True)
            if cycle == args.cycles:
                cycles.append(record)
                break
            week = train_requests[cycle * args.week : (cycle + 1) * args.week]
            record["week"] = summary(run_requests(harness, server, week, tools), None)
            dataset = build_dataset(DatasetOptions(replay_share=0.25))
            record["dataset"] = {
                "version": dataset.version,
                "train": dataset.train_rows,
                "replay": dataset.replay_rows,
            }
            if dataset.train_rows:
                adapter = learning.train(
                    base=CHEAPEST,
                    dataset=dataset,
                    config=TrainingConfig(steps=args.steps, batch_size=2, max_tokens=2048),
                    actor="bench",
                )
                record["training"] = {
                    "seconds": adapter.train_seconds,
                    "size_mib": adapter.size_bytes / 2**20,
                    "losses": adapter.losses,
                }
                if dataset.replay_rows:
                    report = learning.replay(adapter, actor="bench")
                    record["replay"] = {
                        "base": report["base"]["exact"],
                        "candidate": report["candidate"]["exact"],
                    }
                    adapter.refresh_from_db()
                try:
                    learning.promote(adapter, actor="bench")
                    record["promoted"] = adapter.name
                except ApplicationError as exc:
                    record["promoted"] = f"refused: {exc.message}"
            print(
                f"  week {cycle + 1}: {json.dumps({k: v for k, v in record.items() if k != 'dev'})}",
                flush=True,
            )
            cycles.append(record)
    finally:
        server.stop()
    print_table(baseline, cycles)
    elapsed = time.perf_counter() - started
    path = bc.write_results(
        "learning_loop",
        {
            "command": " ".join(sys.argv),
            "args": vars(args),
            "seconds": elapsed,
            "baseline": baseline,
            "cycles": cycles,
            "environment": bc.environment(),
        },
    )
    print(f"\ntotal time {elapsed:.0f} s; JSON: {path.relative_to(bc.ROOT)}")
    bc.finish(harness, keep=args.keep)


def bc_read_tools() -> set[str]:
    from reviewq.config.demo import RETAIL_RISK_TAGS, retail_tools

    return {t["function"]["name"] for t in retail_tools() if t["function"]["name"] not in RETAIL_RISK_TAGS}


def print_table(baseline: dict[str, Any], cycles: list[dict[str, Any]]) -> None:
    def pct(value: Any) -> str:
        return "–" if value is None else f"{value:.0%}"

    def row(label: str, dev: dict[str, Any], trained: str) -> list[Any]:
        saving = f"{dev['saving']:.1f}x" if dev.get("saving") else "1.0x" if label == "all-LLM" else "–"
        return [
            label,
            pct(dev["escalation"]),
            pct(dev["cheapest_rung"]) if label != "all-LLM" else "-",
            pct(dev["auto_released"]),
            pct(dev["released_accuracy"]),
            dev["human_decisions"],
            f"${dev['cost']:.5f}",
            saving,
            f"{dev['p50_s']:.1f}",
            trained,
        ]

    rows = [row("all-LLM", baseline, "")]
    for record in cycles:
        training = record.get("training")
        trained = f"{training['seconds']:.0f} s, {training['size_mib']:.1f} MiB" if training else "–"
        rows.append(row(str(record["cycle"]), record["dev"], trained))
    headers = [
        "cycle",
        "escalated",
        "cheapest rung",
        "auto-released",
        "released acc.",
        "human",
        "cost",
        "saving",
        "p50 s",
        "training after it",
    ]
    print()
    print(table(headers, rows, title="dev requests, per cycle (cycle 0: today's ladder)"))


if __name__ == "__main__":
    main()

"""Agent-sized conversations: retail agent turns replayed as an agent would post them, per model.

    .venv/bin/python bench/conversation_latency.py [--models qwen2.5-coder-0.5b-instruct,...]
        [--turns 60] [--interleave 3] [--state-cache-mb 2048] [--data ../shared/workloads/tau-bench-retail]

Each conversation is built from a τ-bench retail task: the domain policy as the agent's system
prompt, all 16 tools, the user's first message from the task's instruction, and then, for each
gold action in turn, one request (the conversation so far) whose right answer is that action.
After it, the gold call and a tool result computed from the domain's JSON data are appended, as
the agent would after executing it; before a consequential action the user confirms. Each turn's
request is the previous one plus the new messages, and several conversations are interleaved, so
the model's cache of one conversation is displaced by the others between its turns.

Per model it prints the prompt tokens per turn, latency (p50 and p95) of first and later turns,
how often a turn reused an earlier turn's saved state, the state's size per token, and the right
tool / exact call / valid (passes reviewq's validators) rates against the gold actions. The
prompts are those the pipeline builds (router.prompts.build_prompt) for the model's backend.
``--state-cache-mb 0`` keeps no saved states: the baseline without conversation reuse (a turn then
reuses only what the previous call, often another conversation's, left in the KV cache).
"""

from __future__ import annotations

import argparse
import ast
import json
import operator
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reviewq.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from retail import first_person  # noqa: E402

from reviewq.config.demo import RETAIL_RISK_TAGS, RETAIL_RULES, retail_tools  # noqa: E402
from router.answers import parse_answer  # noqa: E402
from router.backends.llama_cpp import LlamaCppBackend  # noqa: E402
from router.defaults import DEFAULT_MODELS  # noqa: E402
from router.model_files import resolve_model_path  # noqa: E402
from router.prompts import TaskSpec, build_prompt  # noqa: E402

# The tools that change the database (the demo tags them "write", "payment" or "destructive").
WRITES = {name for name, tags in RETAIL_RISK_TAGS.items() if {"write", "payment", "destructive"} & set(tags)}
CONFIRM = "Yes, please go ahead."
RATES = (("right_tool", "right tool"), ("exact", "exact call"), ("valid", "valid"))


class Domain:
    """Read-only versions of the retail tools over the domain's JSON files."""

    def __init__(self, data: Path) -> None:
        self.users = json.loads((data / "users.json").read_text())
        self.orders = json.loads((data / "orders.json").read_text())
        self.products = json.loads((data / "products.json").read_text())

    def result(self, name: str, kwargs: dict[str, Any]) -> str:
        if name == "find_user_id_by_email":
            found = [uid for uid, user in self.users.items() if user["email"] == kwargs.get("email")]
            return found[0] if found else "Error: user not found"
        if name == "find_user_id_by_name_zip":
            for uid, user in self.users.items():
                if (
                    user["name"]["first_name"].lower() == str(kwargs.get("first_name", "")).lower()
                    and user["name"]["last_name"].lower() == str(kwargs.get("last_name", "")).lower()
                    and user["address"]["zip"] == kwargs.get("zip")
                ):
                    return uid
            return "Error: user not found"
        if name == "get_user_details":
            return json.dumps(self.users.get(kwargs.get("user_id"), "Error: user not found"))
        if name == "get_order_details":
            return json.dumps(self.orders.get(kwargs.get("order_id"), "Error: order not found"))
        if name == "get_product_details":
            return json.dumps(self.products.get(kwargs.get("product_id"), "Error: product not found"))
        if name == "list_all_product_types":
            return json.dumps(
                {product["name"]: pid for pid, product in self.products.items()}, sort_keys=True
            )
        if name == "calculate":
            return str(round(_arithmetic(ast.parse(str(kwargs.get("expression", "0")), mode="eval").body), 2))
        if name == "think":
            return ""
        if name == "transfer_to_human_agents":
            return "Transfer successful"
        if name in WRITES and "order_id" in kwargs:
            order = dict(self.orders.get(kwargs["order_id"], {}))
            order["status"] = {"cancel_pending_order": "cancelled"}.get(name, "pending (item modified)")
            return json.dumps(order)
        return json.dumps(self.users.get(kwargs.get("user_id"), {}))


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _arithmetic(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return float(_OPERATORS[type(node.op)](_arithmetic(node.left), _arithmetic(node.right)))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_arithmetic(node.operand)
    raise ValueError("not arithmetic")


def conversations(data: Path, limit_turns: int) -> list[list[tuple[list[dict[str, Any]], dict[str, Any]]]]:
    """Per task: the (messages so far, gold action) of each agent turn, until ``limit_turns`` in all."""
    domain = Domain(data)
    policy = (data / "policy.md").read_text()
    tasks = json.loads((data / "retail_tasks_test.json").read_text())
    built, total, seen = [], 0, set()
    for number, task in enumerate(tasks):
        if total >= limit_turns:
            break
        # Several tasks are one user's same actions with other wording: keep the first of them.
        key = json.dumps(task["actions"], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": policy},
            {"role": "user", "content": first_person(task["instruction"])},
        ]
        turns = []
        for index, action in enumerate(task["actions"]):
            if action["name"] in WRITES:
                messages.append({"role": "user", "content": CONFIRM})
            turns.append((list(messages), action))
            call_id = f"call_{number}_{index}"
            messages.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": action["name"], "arguments": json.dumps(action["kwargs"])},
                        }
                    ],
                }
            )
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": call_id,
                    "content": domain.result(action["name"], action["kwargs"]),
                }
            )
        built.append(turns)
        total += len(turns)
    return built


def same_call(answer: Any, gold: dict[str, Any]) -> bool:
    if not isinstance(answer, dict) or answer.get("name") != gold["name"]:
        return False
    return json.dumps(answer.get("arguments"), sort_keys=True) == json.dumps(gold["kwargs"], sort_keys=True)


def run(
    model: dict[str, Any], convs: list[Any], interleave: int, threads: int | None, state_cache_mb: int
) -> dict[str, Any]:
    rss_before = _rss_mib()
    backend = LlamaCppBackend(
        resolve_model_path(model["model_path"]),
        n_ctx=model["context_size"],
        n_threads=threads,
        state_cache_bytes=state_cache_mb * 1024 * 1024,
    )
    rss_loaded = _rss_mib()
    tools = retail_tools()
    rows: list[dict[str, Any]] = []
    peak_state = 0
    # Round-robin over `interleave` conversations at a time: each turn's cache is displaced.
    pending = [list(turns) for turns in convs]
    active: list[tuple[int, list[Any]]] = []
    next_conv = 0
    while active or next_conv < len(pending):
        while len(active) < interleave and next_conv < len(pending):
            active.append((next_conv, pending[next_conv]))
            next_conv += 1
        for slot in list(active):
            conv_index, turns = slot
            turn_index = len(convs[conv_index]) - len(turns)
            messages, gold = turns.pop(0)
            task = TaskSpec("tool_use", messages, tools, rules={k: list(v) for k, v in RETAIL_RULES.items()})
            prompt = build_prompt(task)
            started = time.perf_counter()
            try:
                generation = backend.generate(prompt)
            except Exception as exc:  # noqa: BLE001 - a conversation too long for the context
                rows.append({"conversation": conv_index, "turn": turn_index, "error": str(exc)[:200]})
                active.remove(slot)
                continue
            latency = (time.perf_counter() - started) * 1000
            parsed, action, _ = parse_answer(task, generation.text)
            peak_state = max(peak_state, backend.saved_state_bytes())
            rows.append(
                {
                    "conversation": conv_index,
                    "turn": turn_index,
                    "tokens_in": generation.tokens_in,
                    "evaluated": backend.last_stats["prompt_tokens_evaluated"],
                    "reused": backend.last_stats["reused"],
                    "latency_ms": latency,
                    "right_tool": isinstance(parsed, dict) and parsed.get("name") == gold["name"],
                    "exact": same_call(parsed, gold),
                    "valid": action is not None,
                    "gold": gold["name"],
                    "answer": generation.text[:160],
                }
            )
            row = rows[-1]
            print(
                f"  {model['name']} conversation {conv_index} turn {turn_index}: {row['tokens_in']} tokens, "
                f"{row['evaluated']} evaluated, {latency / 1000:.1f} s, gold {gold['name']}, "
                f"{'right' if row['right_tool'] else 'wrong'} tool",
                file=sys.stderr,
                flush=True,
            )
            if not turns:
                active.remove(slot)
    states = [len(data) / len(tokens) for tokens, data in backend._states.items() if tokens]
    rss_end = _rss_mib()
    del backend
    return {
        "model": model["name"],
        # Resident memory the model added once loaded (weights are mmapped: their pages count once
        # read), and at the end of the run (with the saved states and the KV cache of n_ctx).
        "rss_loaded_mib": rss_loaded - rss_before,
        "rss_end_mib": rss_end - rss_before,
        "rows": rows,
        "peak_state_bytes": peak_state,
        "state_bytes_per_token": states,
    }


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * fraction
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def report(result: dict[str, Any]) -> None:
    rows = [row for row in result["rows"] if "error" not in row]
    errors = len(result["rows"]) - len(rows)
    first = [row["latency_ms"] for row in rows if row["turn"] == 0]
    later = [row["latency_ms"] for row in rows if row["turn"] > 0]
    tokens = [row["tokens_in"] for row in rows]
    share = (lambda key: 100 * sum(row[key] for row in rows) / len(rows)) if rows else (lambda key: 0.0)
    reused = Counter(row["reused"] for row in rows if row["turn"] > 0)
    per_token = result["state_bytes_per_token"]
    print(
        f"\n{result['model']}: {len(rows)} turns of {len({r['conversation'] for r in rows})} conversations"
        + (f" ({errors} did not fit the context)" if errors else "")
    )
    rates = ", ".join(f"{label} {share(key):.0f} %" for key, label in RATES)
    print(f"  {rates}")
    print(f"  prompt tokens per turn: p50 {percentile(tokens, 0.5):.0f}, max {max(tokens, default=0)}")
    for label, values in (("first", first), ("later", later)):
        p50, p95 = percentile(values, 0.5) / 1000, percentile(values, 0.95) / 1000
        print(f"  {label} turns: p50 {p50:.2f} s, p95 {p95:.2f} s")
    evaluated = [row["evaluated"] for row in rows if row["turn"] > 0]
    print(
        f"  later turns: prompt tokens evaluated p50 {percentile(evaluated, 0.5):.0f}; reused {dict(reused)}"
    )
    loaded, end = result["rss_loaded_mib"], result["rss_end_mib"]
    print(f"  memory: {loaded:.0f} MiB once loaded, {end:.0f} MiB at the end")
    if per_token:
        print(
            f"  saved state: {statistics.median(per_token) / 1024:.1f} KiB per token; "
            f"peak {result['peak_state_bytes'] / 2**20:.0f} MiB saved"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="qwen2.5-coder-0.5b-instruct,qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--turns", type=int, default=60, help="agent turns in all (whole conversations)")
    parser.add_argument("--interleave", type=int, default=3, help="conversations in flight at once")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--state-cache-mb",
        type=int,
        default=settings.MODEL_STATE_CACHE_MB,
        help="saved KV states per model (MODEL_STATE_CACHE_MB); 0: no conversation reuse, the baseline",
    )
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "workloads" / "tau-bench-retail"))
    args = parser.parse_args()
    convs = conversations(Path(args.data), args.turns)
    models = {spec["name"]: spec for spec in DEFAULT_MODELS}
    results = []
    for name in args.models.split(","):
        result = run(models[name], convs, args.interleave, args.threads, args.state_cache_mb)
        report(result)
        results.append(result)
    out = ROOT / "bench" / "results" / f"conversation_latency-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

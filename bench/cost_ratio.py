"""Cost ratio: BFCL simple and multiple through the whole ladder, against sending everything to the LLM.

    .venv/bin/python bench/cost_ratio.py [--limit 20] [--categories simple,multiple]
                                         [--thresholds 0.4,0.6,0.8,none] [--threads 1] [--keep]

Each question goes through the real pipeline (bench/bfcl_common.py: the same conversion, data and
Django harness as bench/bfcl.py) once per ladder configuration, and once more with the SLM
switched off (the all-LLM baseline):
- the ladder: the seeded small-model rungs (Qwen2.5-Coder 0.5B for short requests with few tools,
  then 1.5B) propose under their grammar; a validation failure (schema, grounding) gets one retry
  per rung, then the next rung, then the LLM; a valid answer whose uncertainty score is above the threshold
  goes to the LLM at once (an EscalationPolicy row for tool_use with ``uncertainty_threshold``;
  ``none`` switches that trigger off). The LLM is the seeded ``claude-sonnet-4-6`` ModelSpec,
  enabled against a fake Anthropic Messages API on 127.0.0.1 (tests/fake_anthropic.py) that
  answers every request with the gold call: the first allowed value of each BFCL argument;
- the baseline: the SLM ModelSpec disabled, so every request goes straight to the LLM (trigger
  ``no_slm``) with the plain prompt a direct call would send;
- the BFCL tools are registered as read-only ToolSpecs with one auto RiskPolicy, so valid
  proposals are released (except where the agent's own tool description adds a risk tag, e.g.
  "delete" makes a tool destructive: those are held, as the product intends); the released
  action is compared with BFCL's possible answers.

Token counts: the fake reports usage computed from the request it received, the same way for
the ladder's escalations and the baseline. Input tokens = ceil(characters / 4) of the JSON of
``system``, ``messages`` and ``tools`` (what Claude reads; 4 characters per token is the usual
rule of thumb for English and JSON, and no tokenizer for Claude is available offline) plus 313,
the tool-use system prompt Anthropic adds for ``tool_choice`` any/tool on Claude 4 models.
Output tokens = ceil(characters / 4) of the JSON of the tool calls (forced tool use writes no
preamble) plus 10 for the block framing. Costs are ModelCall.cost_usd, i.e. the registry's
prices: Claude Sonnet's list prices ($3 / $15 per million input / output tokens) and the small
models' compute estimates (router/defaults.py). Saving factor = baseline cost / ladder cost.

The baseline's accuracy is 100% by construction (the fake answers with the gold call) except
where the pipeline's own validators reject a gold answer; the ladder's accuracy is what the SLM
got right plus what it escalated. Results go to bench/results/cost_ratio.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bfcl_common as bc

DEFAULT_LIMIT = 20
# The score counts only the alternatives the grammar allows (router/backends/llama_cpp.py,
# _greedy), so the trade-off lies between 0.4 and 0.8. "none": no escalation on uncertainty.
DEFAULT_THRESHOLDS = "0.4,0.6,0.8,none"
CHARS_PER_TOKEN = 4
TOOL_USE_SYSTEM_TOKENS = 313  # Anthropic's tool-use system prompt, tool_choice any/tool, Claude 4
OUTPUT_FRAMING_TOKENS = 10
BASELINE = "all-LLM"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="questions per category (spread)")
    parser.add_argument("--categories", default="simple,multiple", help="comma-separated")
    parser.add_argument(
        "--thresholds",
        default=DEFAULT_THRESHOLDS,
        help="uncertainty thresholds of the ladder configurations to run ('none': trigger off)",
    )
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (MODEL_THREADS)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary database")
    parser.add_argument(
        "--proposers",
        default="",
        help="the ladder's small models, comma-separated (default: the seeded rungs)",
    )
    args = parser.parse_args()
    args.categories = [c.strip() for c in args.categories.split(",") if c.strip()]
    if set(args.categories) - {"simple", "multiple", "parallel"}:
        parser.error("categories: simple, multiple, parallel (irrelevance has no gold call)")
    args.thresholds = [None if t.strip() == "none" else float(t) for t in args.thresholds.split(",")]
    args.proposers = [name.strip() for name in args.proposers.split(",") if name.strip()]
    return args


def tokens(value: Any) -> int:
    return math.ceil(len(json.dumps(value, ensure_ascii=False)) / CHARS_PER_TOKEN)


def input_tokens(body: dict[str, Any]) -> int:
    """The token estimate for a Messages API request body (see the module docstring)."""
    read = {key: body.get(key) for key in ("system", "messages", "tools")}
    return tokens(read) + TOOL_USE_SYSTEM_TOKENS


def output_tokens(calls: list[dict[str, Any]]) -> int:
    return tokens([{"name": c["name"], "input": c["arguments"]} for c in calls]) + OUTPUT_FRAMING_TOKENS


def gold_server() -> Any:
    """The fake Messages API, answering every request with ``server.gold`` (set per question)."""
    from tests.fake_anthropic import FakeAnthropic, tool_uses_answer

    class GoldAnthropic(FakeAnthropic):
        gold: list[dict[str, Any]] = []

        def default_body(self, request: dict[str, Any]) -> dict[str, Any]:
            answer = tool_uses_answer(
                [(call["name"], call["arguments"]) for call in self.gold],
                input_tokens=input_tokens(request),
                output_tokens=output_tokens(self.gold),
            )
            body = dict(answer.body or {})
            # Forced tool use: Claude writes the tool_use block(s) only, no text before them.
            body["content"] = [block for block in body["content"] if block["type"] == "tool_use"]
            return body

    return GoldAnthropic().start()


def register_tools(questions: list[bc.Question]) -> None:
    """Every BFCL tool as a read-only ToolSpec, released by one auto policy."""
    from reviewq.models import RiskPolicy, ToolSpec

    for question in questions:
        for tool in question.tools:
            function = tool["function"]
            ToolSpec.objects.get_or_create(
                name=function["name"],
                defaults={
                    "description": function.get("description", ""),
                    "parameters": function["parameters"],
                    "risk_tags": ["read"],
                },
            )
    RiskPolicy.objects.get_or_create(
        name="bfcl read-only tools",
        defaults={"priority": 10, "tool_pattern": "*", "match_tags": ["read"], "decision": "auto"},
    )


def configure(config: str, threshold: float | None, proposers: list[str]) -> None:
    """Switches the registry and the escalation policy to ``config`` (a ladder or the baseline);
    the ladder's small models are ``proposers``, or the seeded rungs (SmolLM2 stays off)."""
    from router.defaults import DEFAULT_MODELS
    from router.models import EscalationPolicy, ModelSpec

    if config != BASELINE and proposers:
        bc.use_proposers(proposers)
    else:
        slms = [spec.id for spec in ModelSpec.objects.filter(tier="slm") if "tool_use" in spec.strengths]
        defaults = {spec["name"]: spec.get("enabled", True) for spec in DEFAULT_MODELS}
        for spec in ModelSpec.objects.filter(id__in=slms):
            enabled = config != BASELINE and defaults.get(spec.name, True)
            ModelSpec.objects.filter(id=spec.id).update(enabled=enabled)
    EscalationPolicy.objects.update_or_create(
        task_type="tool_use",
        defaults={"uncertainty_threshold": threshold, "max_slm_retries": 1, "max_llm_attempts": 2},
    )


def measure(harness: bc.Harness, question: bc.Question, config: str) -> dict[str, Any]:
    from telemetry.models import ModelCall

    started = time.perf_counter()
    request = bc.submit(harness, question)
    seconds = time.perf_counter() - started
    calls = list(ModelCall.objects.filter(request=request).order_by("id"))
    llm_calls = [c for c in calls if c.tier == "llm"]
    decision = request.decision or {}
    released = request.status == "released"
    return {
        "config": config,
        "id": question.id,
        "category": question.category,
        "status": request.status,
        "seconds": round(seconds, 3),
        "released": released,
        "released_tier": decision.get("tier") if released else None,
        "released_correct": bc.answer_matches(bc.calls_of_action(request.action, question.names), question)
        if released
        else None,
        "trigger": decision.get("escalation_trigger"),
        "reason": None if released else decision.get("reason"),
        "llm_calls": len(llm_calls),
        "llm_rejections": [e for c in llm_calls for e in c.validation_errors],
        "slm_cost": sum((c.cost_usd for c in calls if c.tier == "slm"), Decimal(0)),
        "llm_cost": sum((c.cost_usd for c in llm_calls), Decimal(0)),
        "llm_tokens_in": sum(c.tokens_in for c in llm_calls),
        "llm_tokens_out": sum(c.tokens_out for c in llm_calls),
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    released = [r for r in rows if r["released"]]
    return {
        "requests": len(rows),
        "slm_releases": sum(r["released_tier"] == "slm" for r in rows),
        "slm_releases_correct": sum(bool(r["released_correct"]) for r in rows if r["released_tier"] == "slm"),
        "llm_escalations": sum(r["llm_calls"] > 0 for r in rows),
        "llm_calls": sum(r["llm_calls"] for r in rows),
        "released": len(released),
        "released_correct": sum(bool(r["released_correct"]) for r in released),
        "held": sum(r["status"] == "awaiting_review" for r in rows),
        "slm_cost": sum((r["slm_cost"] for r in rows), Decimal(0)),
        "llm_cost": sum((r["llm_cost"] for r in rows), Decimal(0)),
        "cost": sum((r["slm_cost"] + r["llm_cost"] for r in rows), Decimal(0)),
        "llm_tokens_in_mean": sum(r["llm_tokens_in"] for r in rows)
        / max(1, sum(r["llm_calls"] for r in rows)),
        "seconds": sum(r["seconds"] for r in rows),
    }


def print_report(summaries: dict[str, dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    baseline = summaries[BASELINE]["cost"]
    body = []
    for config, s in summaries.items():
        n = s["requests"]
        saving = f"{baseline / s['cost']:.2f}x" if s["cost"] else "-"
        body.append(
            [
                config,
                n,
                f"{s['slm_releases']} ({bc.pct(s['slm_releases'], n)})",
                f"{s['llm_escalations']} ({bc.pct(s['llm_escalations'], n)})",
                f"{s['released']} ({bc.pct(s['released'], n)})",
                bc.pct(s["released_correct"], s["released"]),
                bc.pct(s["released_correct"], n),
                bc.pct(s["slm_releases_correct"], s["slm_releases"]),
                f"${s['cost']:.5f}",
                f"${s['slm_cost']:.5f}",
                f"${1000 * s['cost'] / n:.3f}" if n else "-",
                f"{s['llm_tokens_in_mean']:.0f}",
                saving,
            ]
        )
    print()
    print(
        bc.table(
            [
                "configuration",
                "requests",
                "SLM-only releases",
                "LLM escalations",
                "released",
                "acc. released",
                "correct of all",
                "acc. SLM rel.",
                "cost",
                "of it SLM",
                "per 1k req.",
                "LLM tok in",
                "saving",
            ],
            body,
        )
    )
    print(
        f"saving = {BASELINE} cost / configuration cost (SLM compute included). The {BASELINE} accuracy is "
        "100% by construction (the fake LLM answers with the gold call) wherever the validators let the "
        "gold answer through and the policy releases it."
    )
    rejected = [r for r in rows if r["llm_rejections"]]
    if rejected:
        print(f"LLM (gold) answers rejected by the pipeline's validators: {len(rejected)} requests, e.g.")
        for row in rejected[:5]:
            issue = row["llm_rejections"][0]
            print(
                f"  [{row['config']}] {row['id']}: {issue['validator']} at {issue['path']}: "
                f"{issue['message']}"
            )
    held = [r for r in rows if r["status"] == "awaiting_review"]
    if held:
        print(f"held for a human: {len(held)} requests, e.g.")
        for row in held[:5]:
            print(f"  [{row['config']}] {row['id']}: {(row['reason'] or '')[:160]}")


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    os.environ["MODEL_THREADS"] = str(args.threads)
    harness = bc.setup_django(anthropic_key="sk-bench-not-a-real-key")
    from router.models import ModelSpec

    server = gold_server()
    ModelSpec.objects.filter(tier="llm").update(enabled=True, base_url=server.base_url)
    questions = [q for category in args.categories for q in bc.load_questions(category, args.limit)]
    register_tools(questions)
    configs = [(f"ladder, threshold {t if t is not None else 'none'}", t) for t in args.thresholds]
    configs.append((BASELINE, None))
    print(
        f"cost ratio: {len(questions)} questions "
        f"({args.limit} per category of {', '.join(args.categories)}), "
        f"configurations: {', '.join(name for name, _ in configs)}; llama.cpp threads {args.threads}"
    )
    rows: list[dict[str, Any]] = []
    try:
        # Question-major: the ladder configurations ask the SLM the same prompt in a row, so its
        # cached prompt prefix serves them all.
        for index, question in enumerate(questions, 1):
            server.gold = bc.gold_calls(question)
            line = []
            for config, threshold in configs:
                configure(config, threshold, args.proposers)
                row = measure(harness, question, config)
                rows.append(row)
                tier = row["released_tier"] or row["status"]
                line.append(f"{tier}{'' if row['released_correct'] in (None, True) else ' (wrong)'}")
            print(f"  {index}/{len(questions)} {question.id}: {' | '.join(line)}", flush=True)
    finally:
        server.stop()
    summaries = {config: summarise([r for r in rows if r["config"] == config]) for config, _ in configs}
    print_report(summaries, rows)
    elapsed = time.perf_counter() - started
    print(f"\ntotal time {elapsed:.0f} s (load average now {', '.join(f'{x:.1f}' for x in os.getloadavg())})")
    path = bc.write_results(
        "cost_ratio" + (f"-{'+'.join(args.proposers)}" if args.proposers else ""),
        {
            "command": " ".join(sys.argv),
            "limit": args.limit,
            "categories": args.categories,
            "thresholds": args.thresholds,
            "threads": args.threads,
            "token_estimate": {
                "chars_per_token": CHARS_PER_TOKEN,
                "tool_use_system_tokens": TOOL_USE_SYSTEM_TOKENS,
                "output_framing_tokens": OUTPUT_FRAMING_TOKENS,
            },
            "seconds": elapsed,
            "environment": bc.environment(),
            "summaries": summaries,
            "saving_factor": {
                config: float(summaries[BASELINE]["cost"] / s["cost"]) if s["cost"] else None
                for config, s in summaries.items()
            },
            "requests": rows,
        },
    )
    print(f"JSON: {path.relative_to(bc.ROOT)}")
    bc.finish(harness, keep=args.keep)


if __name__ == "__main__":
    main()

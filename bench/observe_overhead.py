"""Observe mode's overhead: /v1/chat/completions forwarding to an upstream LLM, against calling
that upstream directly, in the same run.

    .venv/bin/python bench/observe_overhead.py [--requests 200] [--data ../shared/workloads/tau-bench-retail]

The upstream is a local OpenAI-compatible stand-in on 127.0.0.1 that answers every call at once
with a read-only tool call (``get_order_details``), so the difference is what reviewq adds:
authenticating the key, reading the body, forwarding it, storing the UpstreamCall with its risk
policy decision, and handing the small model's comparison to the embedded worker (which runs
it beside the next requests, as in production, with the deterministic fake model). Two request
shapes alternate, each call made directly and through reviewq back to back (the order flips
every other pair) on keep-alive connections:

- short: one user message and 2 tools;
- agent: a τ-bench retail turn (the domain policy as system prompt, all 16 tools, the
  conversation so far with its tool results), the shape real agents send.

It prints p50 and p99 of each path and of the per-pair difference (added latency), per shape.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
from conversation_latency import conversations
from harness import free_port, machine, percentile, stack, table, write_results

from reviewq.config.demo import retail_tools
from tests.fake_openai import tool_call_completion

ANSWER = json.dumps(tool_call_completion("get_order_details", {"order_id": "#W2378156"})).encode()


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real upstream
    disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def log_message(self, *args: Any) -> None:
        pass


def bodies(data: Path) -> dict[str, list[dict[str, Any]]]:
    tools = retail_tools()
    short_tools = [t for t in tools if t["function"]["name"] in ("get_order_details", "cancel_pending_order")]
    short = {
        "model": "gpt-team",
        "messages": [{"role": "user", "content": "Where is my order #W2378156?"}],
        "tools": short_tools,
    }
    agent = [
        {"model": "gpt-team", "messages": messages, "tools": tools}
        for turns in conversations(data, 40)
        for messages, _ in turns
    ]
    return {"short": [short], "agent": agent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="pairs per shape")
    parser.add_argument(
        "--data", default=str(Path(__file__).resolve().parents[2] / "shared/workloads/tau-bench-retail")
    )
    args = parser.parse_args()

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    upstream_url = f"http://127.0.0.1:{upstream.server_address[1]}/v1/chat/completions"
    shapes = bodies(Path(args.data))

    with stack("observe") as st:
        key = st.seed()
        st.shell(
            "from reviewq.models import AgentKey; from router.models import ModelSpec\n"
            "m = ModelSpec.objects.create(name='team-llm', backend='openai_compatible', "
            f"model_path='gpt-team', base_url='http://127.0.0.1:{upstream.server_address[1]}', "
            "tier='llm', strengths=['tool_use'], "
            "price_input_per_mtok=2.5, price_output_per_mtok=10, enabled=False)\n"
            "AgentKey.objects.filter(name='bench-agent').update(mode='observe', upstream_model=m)\n"
        )
        port = free_port()
        st.start_uvicorn(port)
        reviewq_url = f"http://127.0.0.1:{port}/v1/chat/completions"
        results: dict[str, Any] = {"machine": machine(), "requests": args.requests, "shapes": {}}
        with (
            httpx2.Client(timeout=30) as direct,
            httpx2.Client(timeout=30, headers={"Authorization": f"Bearer {key}"}) as gateway,
        ):
            for shape, samples in shapes.items():
                times: dict[str, list[float]] = {"direct": [], "reviewq": []}
                added: list[float] = []
                for index in range(args.requests + 20):  # the first 20 pairs warm both paths up
                    body = samples[index % len(samples)]
                    order = [("direct", direct, upstream_url), ("reviewq", gateway, reviewq_url)]
                    if index % 2:
                        order.reverse()
                    pair: dict[str, float] = {}
                    for name, client, url in order:
                        started = time.perf_counter()
                        response = client.post(url, json=body)
                        pair[name] = (time.perf_counter() - started) * 1000
                        if response.status_code != 200:
                            sys.exit(f"{name} answered {response.status_code}: {response.text[:300]}")
                    if index >= 20:
                        for name, ms in pair.items():
                            times[name].append(ms)
                        added.append(pair["reviewq"] - pair["direct"])
                size = statistics.median(len(json.dumps(b)) for b in samples)
                results["shapes"][shape] = {
                    "body_bytes_p50": size,
                    **{
                        f"{name}_ms": {"p50": percentile(v, 0.5), "p99": percentile(v, 0.99)}
                        for name, v in times.items()
                    },
                    "added_ms": {"p50": percentile(added, 0.5), "p99": percentile(added, 0.99)},
                }
        logged = st.query("SELECT COUNT(*) AS n FROM telemetry_upstreamcall")[0]["n"]
        results["upstream_calls_logged"] = logged
    upstream.shutdown()

    rows = [
        [
            shape,
            f"{r['body_bytes_p50'] / 1024:.1f} KiB",
            f"{r['direct_ms']['p50']:.2f} / {r['direct_ms']['p99']:.2f}",
            f"{r['reviewq_ms']['p50']:.2f} / {r['reviewq_ms']['p99']:.2f}",
            f"{r['added_ms']['p50']:.2f} / {r['added_ms']['p99']:.2f}",
        ]
        for shape, r in results["shapes"].items()
    ]
    print(
        table(
            ["shape", "body", "direct p50 / p99 ms", "via reviewq p50 / p99 ms", "added p50 / p99 ms"],
            rows,
            title=f"observe mode, {args.requests} pairs per shape; {logged} upstream calls logged",
        )
    )
    print(f"results: {write_results('observe_overhead', results)}")


if __name__ == "__main__":
    main()

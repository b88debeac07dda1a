"""``manage.py import_traces`` on a large file of agent-sized conversations: time and memory.

    .venv/bin/python bench/import_traces.py [--lines 10000] [--databases sqlite,postgres]
        [--data ../shared/workloads/tau-bench-retail]

The file holds τ-bench retail turns as an upstream LLM's log would: the domain policy as system
prompt, all 16 tools, the conversation so far with its tool results, and the gold call as the
assistant's answer, each line made distinct by a ticket number in the user's first message. Per
database it imports the file into a fresh database, then imports it again (every line a
duplicate), and prints the wall time, lines per second and the command's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from conversation_latency import conversations
from harness import PYTHON, ROOT, machine, stack, table, write_results

from reviewq.config.demo import retail_tools


def write_file(path: Path, data: Path, lines: int) -> int:
    tools = retail_tools()
    turns = [(messages, action) for task in conversations(data, 200) for messages, action in task]
    with path.open("w") as out:
        for number in range(lines):
            messages, action = turns[number % len(turns)]
            messages = [dict(message) for message in messages]
            messages[1]["content"] = f"{messages[1]['content']} (ticket {number})"
            answer = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{number}",
                        "type": "function",
                        "function": {"name": action["name"], "arguments": json.dumps(action["kwargs"])},
                    }
                ],
            }
            record: dict[str, Any] = {
                "messages": [*messages, answer],
                "tools": tools,
                "model": "gpt-team",
                "usage": {"prompt_tokens": 6000, "completion_tokens": 40},
            }
            out.write(json.dumps(record) + "\n")
    return path.stat().st_size


def timed_import(st: Any, path: Path) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    result = subprocess.run(
        [PYTHON, "manage.py", "import_traces", str(path), "-v", "0"],
        cwd=ROOT,
        env=st.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "seconds": seconds,
        # ru_maxrss of children is the largest child so far: a rise means this one was larger.
        "peak_rss_mib": max(peak, before) / 1024,
        "summary": result.stdout.strip().splitlines()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument(
        "--data", default=str(Path(__file__).resolve().parents[2] / "shared/workloads/tau-bench-retail")
    )
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": machine(), "lines": args.lines, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "logs.jsonl"
        size = write_file(path, Path(args.data), args.lines)
        results["file_mib"] = size / 2**20
        for database in filter(None, args.databases.split(",")):
            with stack(f"import_{database}", database=database) as st:
                st.manage("migrate", "--noinput", "-v0")
                st.manage("seed_demo")
                first = timed_import(st, path)
                again = timed_import(st, path)
                stored = st.query("SELECT COUNT(*) AS n FROM telemetry_upstreamcall")[0]["n"]
            results["runs"][database] = {"first": first, "again": again, "stored": stored}
    rows = [
        [
            database,
            f"{run['first']['seconds']:.1f} s ({args.lines / run['first']['seconds']:.0f}/s)",
            f"{run['again']['seconds']:.1f} s",
            f"{run['first']['peak_rss_mib']:.0f} MiB",
            run["stored"],
        ]
        for database, run in results["runs"].items()
    ]
    print(
        table(
            ["database", "import", "again (all duplicates)", "peak RSS", "stored"],
            rows,
            title=f"import_traces: {args.lines} lines, {results['file_mib']:.0f} MiB",
        )
    )
    for database, run in results["runs"].items():
        print(f"{database}: {run['first']['summary']} | again: {run['again']['summary']}")
    print(f"results: {write_results('import_traces', results)}")


if __name__ == "__main__":
    main()

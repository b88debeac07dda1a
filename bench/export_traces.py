"""How fast golden-trace export runs, and how much memory it takes, at 100k traces.

Sets up Django against a fresh SQLite database in a temporary directory, bulk-inserts N golden
traces (with the requests and review items they belong to: 60 % approvals, 25 % edits, 15 %
denials, multi-turn retail conversations with emails and phone numbers), then exports them
through ``telemetry.exports.export_to_file`` in each format: sft, dpo, raw, and sft --redact.

    .venv/bin/python bench/export_traces.py [--traces 100000] [--keep]

Each export runs in a child process of its own, so that its peak RSS is its own and not the
insert's (the kernel's peak mark is reset just before the export starts): once under tracemalloc
for the peak of Python allocations (it slows the run, so it is not timed), then once for time
and peak RSS. A JSON copy of the table goes to
bench/results/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CASES = {"sft": ("sft", False), "dpo": ("dpo", False), "raw": ("raw", False), "sft --redact": ("sft", True)}
BATCH = 2000
RISKY_TOOLS = (
    "cancel_pending_order",
    "modify_pending_order_address",
    "modify_pending_order_payment",
    "return_delivered_order_items",
    "exchange_delivered_order_items",
    "modify_user_address",
    "transfer_to_human_agents",
)
FIRST = ("Jane", "Omar", "Li", "Sofia", "Marek", "Aisha", "Tom", "Yuki", "Ana", "Kofi")
LAST = ("Doe", "Haddad", "Wang", "Rossi", "Novak", "Khan", "Berg", "Sato", "Silva", "Mensah")
DENY_REASONS = (
    "the customer did not confirm the order number",
    "refund exceeds what the customer asked for",
    "wrong order: {email} has two pending orders, check which one",
    "policy: address changes need the account holder on the line",
)


def setup_django(data_dir: Path) -> None:
    """Django on a SQLite database in ``data_dir``, whatever the environment says."""
    os.environ["REVIEWQ_DATA_DIR"] = str(data_dir)
    os.environ["DJANGO_SETTINGS_MODULE"] = "reviewq.settings"
    os.environ["REVIEWQ_MODEL_BACKEND"] = "fake"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


# --- Data ---


class Customers:
    """A fixed pool of customers, so the same email or phone recurs as it does in real traffic."""

    def __init__(self, rng: random.Random, size: int = 5000) -> None:
        self.people = []
        for index in range(size):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            self.people.append(
                {
                    "first": first,
                    "last": last,
                    "email": f"{first}.{last}{index}@example.com".lower(),
                    "phone": f"+1 {rng.randint(200, 989)}-555-{rng.randint(0, 9999):04d}",
                    "user_id": f"{first}_{last}_{index}".lower(),
                }
            )


def _value(name: str, schema: dict[str, Any], person: dict[str, str], rng: random.Random) -> Any:
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if schema.get("type") == "array":
        return [str(rng.randint(10**9, 10**10 - 1)) for _ in range(rng.randint(1, 2))]
    return {
        "order_id": f"#W{rng.randint(10**6, 10**7 - 1)}",
        "payment_method_id": f"credit_card_{rng.randint(10**6, 10**7 - 1)}",
        "address1": f"{rng.randint(1, 999)} Main Street",
        "address2": f"Suite {rng.randint(1, 99)}",
        "city": "Austin",
        "state": "TX",
        "country": "USA",
        "zip": f"{rng.randint(10000, 99999)}",
        "user_id": person["user_id"],
        "summary": f"{person['first']} ({person['email']}, {person['phone']}) wants a call back",
    }.get(name, "unknown")


def _action(tool: dict[str, Any], person: dict[str, str], rng: random.Random) -> dict[str, Any]:
    params = tool["function"]["parameters"]
    arguments = {name: _value(name, sub, person, rng) for name, sub in params.get("properties", {}).items()}
    return {
        "id": "act_" + uuid.UUID(int=rng.getrandbits(128)).hex,
        "type": "tool_calls",
        "tool_calls": [
            {
                "id": f"call_{rng.getrandbits(96):024x}",
                "name": tool["function"]["name"],
                "arguments": arguments,
            }
        ],
    }


def _corrected(value: Any) -> Any:
    if isinstance(value, list):
        return [*value, str(10**9)]
    return f"{value} (corrected)"


def _edited(action: dict[str, Any], tool: dict[str, Any], person: dict[str, str], rng: random.Random) -> Any:
    call = action["tool_calls"][0]
    arguments = dict(call["arguments"])
    name = rng.choice(sorted(arguments)) if arguments else None
    if name is not None:
        schema = tool["function"]["parameters"]["properties"][name]
        options = [value for value in schema.get("enum", []) if value != arguments[name]]
        new = rng.choice(options) if options else _value(name, {}, person, rng)
        # A reviewer's edit changes something (some generated values, like the city, are constant).
        arguments[name] = new if new != arguments[name] else _corrected(new)
    return {
        **action,
        "tool_calls": [
            {"id": f"call_{rng.getrandbits(96):024x}", "name": call["name"], "arguments": arguments}
        ],
    }


def _messages(
    person: dict[str, str], order_id: str, tool_name: str, rng: random.Random
) -> list[dict[str, Any]]:
    call_id = f"call_{rng.getrandbits(96):024x}"
    messages: list[dict[str, Any]] = []
    if rng.random() < 0.5:
        messages.append({"role": "system", "content": "You are the retail support agent of an online store."})
    messages += [
        {
            "role": "user",
            "content": f"Hi, I'm {person['first']} {person['last']} ({person['email']}, phone "
            f"{person['phone']}). About my order {order_id}: please {tool_name.replace('_', ' ')}.",
        },
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {
                        "name": "get_order_details",
                        "arguments": json.dumps({"order_id": order_id}),
                    },
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": call_id,
            "content": json.dumps(
                {
                    "order_id": order_id,
                    "user_id": person["user_id"],
                    "status": rng.choice(["pending", "delivered"]),
                    "items": [
                        {
                            "item_id": str(rng.randint(10**9, 10**10 - 1)),
                            "price": round(rng.uniform(5, 500), 2),
                        }
                        for _ in range(rng.randint(1, 3))
                    ],
                }
            ),
        },
        {"role": "user", "content": "Yes, that's the one. Please go ahead."},
    ]
    return messages


def insert_traces(count: int, seed: int = 7) -> float:
    """Bulk-inserts ``count`` decided requests with their review items and golden traces."""
    from django.contrib.auth.models import User
    from django.db import transaction
    from django.utils import timezone

    from reviewq.config.demo import retail_tools
    from reviewq.models import AgentKey, GoldenTrace, Request, RequestStatus, ReviewItem

    rng = random.Random(seed)
    tools = {tool["function"]["name"]: tool for tool in retail_tools()}
    customers = Customers(rng)
    reviewer = User.objects.create_user("bench-reviewer")
    agent_key = AgentKey.objects.create(
        name="bench", prefix="rq_bench", key_hash=hashlib.sha256(b"b").hexdigest()
    )
    started = time.perf_counter()
    now = timezone.now()
    for offset in range(0, count, BATCH):
        size = min(BATCH, count - offset)
        requests, items, traces = [], [], []
        for _ in range(size):
            person = rng.choice(customers.people)
            tool = tools[rng.choice(RISKY_TOOLS)]
            request_tools = [tools["get_order_details"], tools["find_user_id_by_email"], tool]
            proposal = _action(tool, person, rng)
            order_id = proposal["tool_calls"][0]["arguments"].get("order_id", "#W0000000")
            roll = rng.random()
            decision = "approve" if roll < 0.6 else "edit" if roll < 0.85 else "deny"
            final = proposal if decision == "approve" else _edited(proposal, tool, person, rng)
            final = None if decision == "deny" else final
            reason = rng.choice(DENY_REASONS).format(email=person["email"]) if decision == "deny" else ""
            messages = _messages(person, order_id, tool["function"]["name"], rng)
            request = Request(
                agent_key=agent_key,
                body_sha256=f"{rng.getrandbits(256):064x}",
                messages=messages,
                tools=request_tools,
                task_type="tool_use",
                status=RequestStatus.DENIED if final is None else RequestStatus.RELEASED,
                proposal=proposal,
                action=final,
                decision={"by": "reviewer", "reviewer": reviewer.username, "decision": decision},
                finished_at=now,
            )
            item = ReviewItem(
                request=request,
                hold_reason="Hold money, personal data and destructive changes",
                status={"approve": "approved", "edit": "edited", "deny": "denied"}[decision],
                action_under_review=proposal,
                sla_due_at=now + timedelta(minutes=15),
                expires_at=now + timedelta(days=1),
                decided_by=reviewer,
                decided_at=now,
                decision_reason=reason,
            )
            trace = GoldenTrace(
                request=request,
                review_item=item,
                context={"messages": messages, "tools": request_tools},
                proposal=proposal,
                final_action=final,
                decision=decision,
                reason=reason,
                reviewer=reviewer,
                time_to_decision_ms=rng.randint(5_000, 900_000),
            )
            requests.append(request)
            items.append(item)
            traces.append(trace)
        with transaction.atomic():
            Request.objects.bulk_create(requests)
            ReviewItem.objects.bulk_create(items)
            GoldenTrace.objects.bulk_create(traces)
    return time.perf_counter() - started


# --- Measuring one export (in a child process) ---


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS mark (VmHWM), so the peak read later is the export's own."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def run_child(data_dir: Path, case: str, use_tracemalloc: bool) -> dict[str, Any]:
    setup_django(data_dir)
    from reviewq.models import GoldenTrace
    from telemetry import exports

    format, redact = CASES[case]
    options = exports.export_options(format=format, redact=redact)
    out = data_dir / f"export-{format}{'-redacted' if redact else ''}.jsonl"
    queryset = GoldenTrace.objects.all()
    exports.select_traces(queryset, options).count()  # connect and warm up outside the measurement
    rss_before = _status_mb("VmRSS")
    # Without the reset (no /proc), the peak is the process's whole life, start-up included.
    peak_is_export_only = _reset_peak_rss()
    if use_tracemalloc:
        tracemalloc.start()
    started = time.perf_counter()
    manifest = exports.export_to_file(queryset, options, out)
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {
        "case": case,
        "lines": manifest["lines"],
        "seconds": round(seconds, 2),
        "mb_written": round(manifest["bytes"] / 1e6, 1),
        "rss_before_mb": round(rss_before, 1),
        "peak_rss_mb": round(
            # ru_maxrss is in KiB on Linux.
            _status_mb("VmHWM")
            if peak_is_export_only
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            1,
        ),
        "skipped": manifest["counts"]["skipped"],
    }
    if use_tracemalloc:
        result["tracemalloc_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.stop()
    out.unlink()
    return result


def measure(data_dir: Path, case: str, use_tracemalloc: bool) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", case, "--data-dir", str(data_dir)]
    if use_tracemalloc:
        command.append("--tracemalloc")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"export {case!r} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- Main ---


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary database afterwards")
    parser.add_argument("--child", choices=list(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(run_child(args.data_dir, args.child, args.tracemalloc)))
        return

    data_dir = Path(tempfile.mkdtemp(prefix="reviewq-bench-export-"))
    try:
        setup_django(data_dir)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        print(f"inserting {args.traces} traces into {data_dir} ...", flush=True)
        insert_seconds = insert_traces(args.traces)
        db_mb = sum(path.stat().st_size for path in data_dir.glob("reviewq.sqlite3*")) / 1e6
        print(f"inserted in {insert_seconds:.1f} s; database {db_mb:.0f} MB\n", flush=True)

        rows = []
        for case in CASES:
            # The traced run first: it also brings the database into the page cache for the timed one.
            traced = measure(data_dir, case, use_tracemalloc=True)
            timed = measure(data_dir, case, use_tracemalloc=False)
            timed["tracemalloc_peak_mb"] = traced["tracemalloc_peak_mb"]
            rows.append(timed)

        header = (
            f"{'format':<13} {'lines':>7} {'seconds':>8} {'lines/s':>9} {'MB written':>10} "
            f"{'RSS before':>10} {'peak RSS':>9} {'tracemalloc peak':>16}"
        )
        print(header)
        print("-" * len(header))
        for row in rows:
            print(
                f"{row['case']:<13} {row['lines']:>7} {row['seconds']:>8.2f} "
                f"{row['lines'] / row['seconds']:>9.0f} {row['mb_written']:>10.1f} "
                f"{row['rss_before_mb']:>9.1f}M {row['peak_rss_mb']:>8.1f}M "
                f"{row['tracemalloc_peak_mb']:>15.1f}M"
            )

        RESULTS.mkdir(parents=True, exist_ok=True)
        result_file = RESULTS / f"export_traces-{args.traces}-{time.strftime('%Y%m%dT%H%M%S')}.json"
        result_file.write_text(
            json.dumps(
                {
                    "traces": args.traces,
                    "insert_seconds": round(insert_seconds, 1),
                    "database_mb": round(db_mb),
                    "machine": {
                        "python": platform.python_version(),
                        "sqlite": sqlite3.sqlite_version,
                        "cpus": os.cpu_count(),
                        "platform": platform.platform(),
                    },
                    "exports": rows,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"\nresults: {result_file.relative_to(ROOT)}")
    finally:
        if args.keep:
            print(f"database kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

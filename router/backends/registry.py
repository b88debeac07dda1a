"""One backend instance per model per process: local models are loaded once, never per task."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from django.conf import settings

from router.backends.base import BackendError, ModelBackend
from router.backends.fake import FakeBackend

if TYPE_CHECKING:
    from router.models import ModelSpec

_backends: dict[tuple[str, str, str], ModelBackend] = {}
_lock = threading.Lock()


def get_backend(spec: ModelSpec) -> ModelBackend:
    """The process-wide backend for ``spec``, loading the model on first use."""
    key = (spec.backend, spec.model_path, spec.base_url)
    with _lock:
        backend = _backends.get(key)
        if backend is None:
            backend = _load(spec)
            _backends[key] = backend
        return backend


def _load(spec: ModelSpec) -> ModelBackend:
    if spec.backend == "fake" or (spec.tier == "slm" and settings.REVIEWQ_MODEL_BACKEND == "fake"):
        return FakeBackend(spec.name, delay_ms=settings.FAKE_MODEL_DELAY_MS)
    if spec.backend == "llama_cpp":
        from router.backends.llama_cpp import LlamaCppBackend
        from router.model_files import ModelFileNotFound, resolve_model_path

        try:
            path = resolve_model_path(spec.model_path)
        except ModelFileNotFound as exc:
            raise BackendError(str(exc)) from exc
        return LlamaCppBackend(
            path,
            n_ctx=spec.context_size,
            n_threads=settings.MODEL_THREADS,
            idle_threads=settings.MODEL_THREADS_WHEN_IDLE,
            n_gpu_layers=settings.MODEL_GPU_LAYERS,
        )
    if spec.backend == "anthropic":
        from router.backends.anthropic import AnthropicBackend

        api_key = os.getenv("ANTHROPIC_API_KEY", "")
        if not api_key:
            raise BackendError("ANTHROPIC_API_KEY is not set")
        return AnthropicBackend(
            model=spec.model_path,
            api_key=api_key,
            base_url=spec.base_url or os.getenv("ANTHROPIC_BASE_URL") or None,
            timeout_s=settings.LLM_TIMEOUT_S,
            max_retries=settings.LLM_MAX_RETRIES,
        )
    if spec.backend == "openai_compatible":
        from router.backends.openai_compatible import OpenAICompatibleBackend

        return OpenAICompatibleBackend(
            base_url=spec.base_url,
            model=spec.model_path,
            api_key=os.getenv("OPENAI_COMPATIBLE_API_KEY", ""),
            timeout_s=settings.LLM_TIMEOUT_S,
        )
    raise BackendError(f"backend {spec.backend!r} of model {spec.name!r} is not available yet")


def reset_backends() -> None:
    """Forget loaded backends (tests switch settings between cases)."""
    with _lock:
        _backends.clear()

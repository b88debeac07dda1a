"""One backend instance per model per process: local models are loaded once, never per task."""

from __future__ import annotations

import threading

from django.conf import settings

from router.backends.base import BackendError, ModelBackend
from router.backends.fake import FakeBackend
from router.contracts import Tier
from router.model_files import ModelFileNotFound, resolve_model_path
from router.models import ModelSpec

_backends: dict[tuple[str, str, str, str], ModelBackend] = {}
_lock = threading.Lock()


def get_backend(spec: ModelSpec) -> ModelBackend:
    """The process-wide backend for ``spec``, loading the model on first use."""
    key = (spec.backend, spec.model_path, spec.base_url, spec.adapter_path)
    with _lock:
        backend = _backends.get(key)
        if backend is None:
            backend = _load(spec)
            # A promoted (or rolled back) adapter replaces the model it was served as: one copy each.
            for stale in [k for k in _backends if k[:3] == key[:3] and k != key]:
                _backends.pop(stale)
            _backends[key] = backend
        return backend


_adapter_backends: dict[tuple[str, str], ModelBackend] = {}


def get_adapter_backend(spec: ModelSpec, adapter_path: str) -> ModelBackend:
    """``spec``'s model with an adapter over it (a shadow, or one cluster's promoted adapter),
    loaded once, beside the copy ``get_backend`` serves."""
    key = (spec.model_path, adapter_path)
    with _lock:
        backend = _adapter_backends.get(key)
        if backend is None:
            fields = {f.attname: getattr(spec, f.attname) for f in ModelSpec._meta.concrete_fields}
            backend = _adapter_backends[key] = _load(ModelSpec(**{**fields, "adapter_path": adapter_path}))
        return backend


def _load(spec: ModelSpec) -> ModelBackend:
    # Each backend module is imported when a model needs it: llama.cpp loads a native library
    # and numpy, the HTTP backends their SDKs, and a process uses only some of them.
    fake_slm = spec.tier == Tier.SLM and settings.REVIEWQ_MODEL_BACKEND == "fake"
    if spec.backend == ModelSpec.Backend.FAKE or fake_slm:
        return FakeBackend(spec.name, delay_ms=settings.FAKE_MODEL_DELAY_MS)
    if spec.backend == ModelSpec.Backend.LLAMA_CPP:
        from router.backends.llama_cpp import LlamaCppBackend

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
            state_cache_bytes=settings.MODEL_STATE_CACHE_MB * 1024 * 1024,
            lora_path=spec.adapter_path or None,
        )
    if spec.backend == ModelSpec.Backend.ANTHROPIC:
        from router.backends.anthropic import AnthropicBackend

        if not settings.ANTHROPIC_API_KEY:
            raise BackendError("ANTHROPIC_API_KEY is not set")
        return AnthropicBackend(
            model=spec.model_path,
            api_key=settings.ANTHROPIC_API_KEY,
            base_url=spec.base_url or settings.ANTHROPIC_BASE_URL or None,
            timeout_s=settings.LLM_TIMEOUT_S,
            max_retries=settings.LLM_MAX_RETRIES,
        )
    if spec.backend == ModelSpec.Backend.OPENAI_COMPATIBLE:
        from router.backends.openai_compatible import OpenAICompatibleBackend

        return OpenAICompatibleBackend(
            base_url=spec.base_url,
            model=spec.model_path,
            api_key=settings.OPENAI_COMPATIBLE_API_KEY,
            timeout_s=settings.LLM_TIMEOUT_S,
        )
    raise BackendError(f"backend {spec.backend!r} of model {spec.name!r} is not available yet")


def reset_backends() -> None:
    """Forget loaded backends (tests switch settings between cases)."""
    with _lock:
        _backends.clear()
        _adapter_backends.clear()

"""Agent keys: created once (the raw key is shown once), authenticated by hash, revoked in admin."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User

from reviewq.models import AgentKey

AGENT_KEY_PREFIX = "rq_"


def _hash_key(raw_key: str) -> str:
    # Keys are 256-bit random tokens, so a plain SHA-256 is enough (no password stretching).
    return hashlib.sha256(raw_key.encode()).hexdigest()


def agent_key_create(
    *, name: str, owner: User | None = None, scope: str = AgentKey.Scope.AGENT
) -> tuple[AgentKey, str]:
    """A new API key. Returns the row and the raw key, which is shown once and never stored."""
    raw_key = AGENT_KEY_PREFIX + secrets.token_urlsafe(32)
    key = AgentKey.objects.create(
        name=name,
        scope=scope,
        prefix=raw_key[:10],
        key_hash=_hash_key(raw_key),
        owner=owner,
        webhook_secret=secrets.token_hex(32),
    )
    return key, raw_key


def agent_key_authenticate(raw_key: str, *, scope: str = AgentKey.Scope.AGENT) -> AgentKey | None:
    """The live key ``raw_key`` names, if it has ``scope``. Remembered for a moment (see below)."""
    key_hash = _hash_key(raw_key)
    key = (
        AgentKey.objects.filter(key_hash=key_hash, revoked_at__isnull=True, scope=scope)
        # The upstream model too: observe mode forwards every call to it, without another query.
        .select_related("owner", "upstream_model")
        .first()
    )
    if key is not None and settings.AGENT_KEY_CACHE_SECONDS > 0:
        with _recent_keys_lock:
            if len(_recent_keys) >= _RECENT_KEYS_MAX:
                _recent_keys.clear()
            _recent_keys[(key_hash, scope)] = (key, time.monotonic() + settings.AGENT_KEY_CACHE_SECONDS)
    return key


# Keys this process authenticated in the last AGENT_KEY_CACHE_SECONDS, so that an agent's calls
# skip the lookup and the thread hop it takes under ASGI (a noticeable part of a routine call).
# Saving or deleting a key clears them in this process at once; any other change (a bulk update,
# another process's admin) reaches every process within AGENT_KEY_CACHE_SECONDS.
_recent_keys: dict[tuple[str, str], tuple[AgentKey, float]] = {}
_recent_keys_lock = threading.Lock()
_RECENT_KEYS_MAX = 4096


def agent_key_recently_authenticated(raw_key: str, *, scope: str = AgentKey.Scope.AGENT) -> AgentKey | None:
    """The key ``raw_key`` names if this process authenticated it a moment ago; no query."""
    remembered = _recent_keys.get((_hash_key(raw_key), scope))
    if remembered is None or remembered[1] < time.monotonic():
        return None
    return remembered[0]


def agent_keys_forget(**kwargs: Any) -> None:
    """Connected to AgentKey's saves and deletes: a revoked key is refused from the next call."""
    with _recent_keys_lock:
        _recent_keys.clear()

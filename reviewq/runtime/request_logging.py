"""Structured logs: one JSON object per line, carrying the id of the request being worked on.

The id lives in a context variable, bound with ``request_context`` where work on one request
begins (the HTTP middleware, the Celery task, the embedded worker). A contextvar rather than a
thread-local: it follows the work into ``sync_to_async``/``async_to_sync`` and asyncio tasks,
and a thread-pool worker starts empty instead of inheriting a stale id from its last job.

This module must not import Django models: the logging configuration loads it while settings
are still being read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

_request_id: ContextVar[str | None] = ContextVar("reviewq_request_id", default=None)

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is emitted.
_STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
    | {"message", "asctime", "request_id", "taskName"}
)


def current_request_id() -> str | None:
    """The request id bound in this context, if any."""
    return _request_id.get()


@contextmanager
def request_context(request_id: Any) -> Iterator[None]:
    """Binds ``request_id`` to every log record emitted inside the block."""
    token = _request_id.set(str(request_id) if request_id is not None else None)
    try:
        yield
    finally:
        _request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Puts the bound request id on each record (``None`` outside any request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # An id passed explicitly with extra={"request_id": ...} wins over the context.
        if getattr(record, "request_id", None) is None:
            record.request_id = _request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON: ts, level, logger, message, request_id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None) or _request_id.get()
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra that is a UUID, a datetime or a Decimal must not break logging.
        return json.dumps(entry, default=str, ensure_ascii=False)

"""Typed errors: one per code the reviewq API answers with, and the outcomes a gated tool can meet.

The API answers every error as JSON ``{"code", "message", ...}``; ``error_from_response`` turns that
into the subclass for its code (or its HTTP status), so callers catch what they mean
(``except RateLimited as exc: time.sleep(exc.retry_after)``) rather than parse bodies.
"""

from __future__ import annotations

from typing import Any


class ReviewqError(Exception):
    """Any error the reviewq API answered with (``status`` is its HTTP status; 0: no answer)."""

    def __init__(self, message: str, *, code: str = "error", status: int = 0, body: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        self.body = body if body is not None else {}

    def __str__(self) -> str:
        where = f"HTTP {self.status} " if self.status else ""
        return f"{where}{self.code}: {self.message}"


class ConnectionFailed(ReviewqError):
    """The server could not be reached, or did not answer in time."""


class InvalidRequest(ReviewqError):
    """422 (or 400): the body or query was refused; ``errors`` lists the fields, when the API did."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        return list(self.body.get("errors") or []) if isinstance(self.body, dict) else []


class InvalidProposedAction(InvalidRequest):
    """422 ``invalid_proposed_action``: the validators' findings are in ``issues``
    (each ``{"validator", "path", "message"}``)."""

    @property
    def issues(self) -> list[dict[str, str]]:
        return list(self.body.get("issues") or []) if isinstance(self.body, dict) else []


class Unauthorized(ReviewqError):
    """401: the agent key is missing, wrong or revoked."""


class Forbidden(ReviewqError):
    """403."""


class NotFound(ReviewqError):
    """404: no such request for this key."""


class Conflict(ReviewqError):
    """409: e.g. ``idempotency_key_reused`` (the same key with another body)."""


class AlreadyFinal(Conflict):
    """409 ``already_final``: a cancel came after the request was decided; ``final_status`` says how."""

    @property
    def final_status(self) -> str:
        return str(self.body.get("status") or "") if isinstance(self.body, dict) else ""


class RateLimited(ReviewqError):
    """429: over the key's request budget; try again after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float = 1.0, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(ReviewqError):
    """5xx."""


# The outcomes of a gated call that are not a release. Not API errors: the API answered fine.


class NotReleased(ReviewqError):
    """The action was not released: denied, expired, failed or cancelled (see ``outcome``)."""

    def __init__(self, message: str, *, outcome: Any, code: str = "not_released") -> None:
        super().__init__(message, code=code)
        self.outcome = outcome

    @property
    def reason(self) -> str:
        return str(getattr(self.outcome, "reason", "") or "")


class Denied(NotReleased):
    """A reviewer (or a policy) denied the action; ``reason`` says why."""


class ReviewTimeout(NotReleased):
    """Nobody decided within the time the caller would wait; the request was cancelled."""


_BY_CODE: dict[str, type[ReviewqError]] = {
    "unauthorized": Unauthorized,
    "not_found": NotFound,
    "invalid_request": InvalidRequest,
    "invalid_proposed_action": InvalidProposedAction,
    "already_final": AlreadyFinal,
    "rate_limited": RateLimited,
}
_BY_STATUS: dict[int, type[ReviewqError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: InvalidRequest,
    429: RateLimited,
}


def error_from_response(status: int, body: Any, headers: Any = None) -> ReviewqError:
    """The typed error for an error answer (``body``: its decoded JSON, or its text)."""
    if isinstance(body, dict):
        code = str(body.get("code") or f"http_{status}")
        message = str(body.get("message") or "")
    else:
        code, message = f"http_{status}", str(body or "")[:500]
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or (ServerError if status >= 500 else ReviewqError)
    if issubclass(cls, RateLimited):
        retry_after = _seconds((headers or {}).get("retry-after"))
        return cls(message, retry_after=retry_after, code=code, status=status, body=body)
    return cls(message, code=code, status=status, body=body)


def _seconds(value: Any) -> float:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 1.0

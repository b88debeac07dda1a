"""The one domain error type. The API maps it to a JSON answer with a stable ``code``."""

from __future__ import annotations


class ApplicationError(Exception):
    def __init__(self, code: str, message: str, *, status: int = 400, extra: dict | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.extra = extra or {}

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, **self.extra}

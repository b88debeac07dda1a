"""Binds an HTTP request id to the logs written while the request is served."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from reviewq.runtime.request_logging import request_context

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's id is copied into every log line: accept only short, plain tokens, so a header
# cannot inject fake log fields or lines.
_ACCEPTABLE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def request_id_for(request: HttpRequest) -> str:
    """The caller's X-Request-ID if it is a plain token, else a fresh one."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _ACCEPTABLE_ID.match(given) else uuid.uuid4().hex


class EitherModeMiddleware:
    """A middleware that runs sync or async, as the chain around it does: under ASGI it adds no
    thread hop of its own. Subclasses write ``__call__`` (which returns ``self.__acall__(request)``
    when ``self.is_async``) and ``__acall__``."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)  # type: ignore[type-var]  # subclasses define __call__


class RequestIdMiddleware(EitherModeMiddleware):
    """Binds ``X-Request-ID`` (generated when absent) for the request and echoes it back."""

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self.__acall__(request)
        request_id = request_id_for(request)
        with request_context(request_id):
            response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        request_id = request_id_for(request)
        with request_context(request_id):
            response = await self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response

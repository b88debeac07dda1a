"""Everything an agent or a browser sends, checked once at the edge before anything else reads it.

One check for every entry point (the JSON APIs' parser, the pages' forms and query strings, the
review socket's query, the raw JSON editor, the admin's preview): a body within the size limit,
JSON no deeper than MAX_JSON_DEPTH, no NaN or Infinity, and no NUL character or lone surrogate
anywhere, keys included. PostgreSQL cannot store a NUL in text or JSON, a lone surrogate cannot
be encoded as UTF-8, and deep nesting exhausts recursion in every library that walks the value:
each of these was a 500. They are a 4xx here, with a message that says what is wrong.
"""

from __future__ import annotations

import json
from typing import Any, cast

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import HttpRequest, JsonResponse
from django.http.multipartparser import MultiPartParserError
from ninja.parser import Parser

from reviewq.errors import ApplicationError
from reviewq.runtime.middleware import EitherModeMiddleware
from router.json_tree import UNSTORABLE

# Deep enough for any real conversation, tool schema or metadata; far below what recursive
# libraries (pydantic's serializer, jsonschema, our own walkers) survive.
MAX_JSON_DEPTH = 64


class UntrustedInputError(ApplicationError):
    """The input cannot be accepted as it is: ``invalid_input`` (400), ``malformed_json`` (400)
    or ``too_large`` (413)."""

    def __init__(self, message: str, *, code: str = "invalid_input", status: int = 400) -> None:
        super().__init__(code, message, status=status)


def check_text(text: str, where: str) -> None:
    """Refuses a NUL character or a lone surrogate in ``text``."""
    found = UNSTORABLE.search(text)
    if found is None:
        return
    what = "a NUL character" if found.group() == "\x00" else "a lone surrogate (not valid Unicode)"
    raise UntrustedInputError(f"{where} contains {what}, which is not accepted")


def check_value(value: Any, where: str = "body") -> None:
    """Refuses JSON deeper than MAX_JSON_DEPTH, or any key or string that ``check_text`` refuses.

    Walks with its own stack, so the depth it checks cannot exhaust Python's.
    """
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, str):
            check_text(node, path)
            continue
        if not isinstance(node, dict | list):
            continue
        if depth >= MAX_JSON_DEPTH:
            raise UntrustedInputError(f"{where} is nested more than {MAX_JSON_DEPTH} levels deep")
        if isinstance(node, dict):
            for key, item in node.items():
                check_text(str(key), f"{path} (a key)")
                stack.append((item, f"{path}.{key}", depth + 1))
        else:
            stack.extend((item, f"{path}[{index}]", depth + 1) for index, item in enumerate(node))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str | bytes, where: str = "body") -> Any:
    """``text`` parsed as JSON and checked (see ``check_value``)."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise UntrustedInputError(f"{where} is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except (ValueError, TypeError) as exc:
        raise UntrustedInputError(f"{where} is not valid JSON: {exc}", code="malformed_json") from None
    check_value(value, where)
    return value


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def check_request(request: HttpRequest) -> None:
    """The parts of an HTTP request that every view may read: its path, its query, its size and,
    for a form post, its fields (a multipart body without a boundary is refused here, before
    CSRF or a view parses it). JSON bodies are checked by the APIs' parser (``JSONParser``)."""
    check_text(request.path, "the path")
    for key, values in request.GET.lists():
        check_text(key, "a query parameter's name")
        for value in values:
            check_text(value, f"the query parameter {key!r}")
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise UntrustedInputError("Content-Length is not a number") from None
    if settings.DATA_UPLOAD_MAX_MEMORY_SIZE is not None and length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        raise UntrustedInputError(
            f"the body is {length} bytes, more than the {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} accepted",
            code="too_large",
            status=413,
        )
    if request.method in ("POST", "PUT", "PATCH") and request.content_type in _FORM_TYPES:
        try:
            # The body first: then the form is parsed from it, and a view (an API's JSON parser)
            # may still read the body afterwards.
            request.body  # noqa: B018
            fields = request.POST
        except (MultiPartParserError, RequestDataTooBig, TooManyFieldsSent) as exc:
            raise UntrustedInputError(f"the form body cannot be read: {exc}") from None
        for key, values in fields.lists():
            check_text(key, "a form field's name")
            for value in values:
                check_text(value, f"the form field {key!r}")


class UntrustedInputMiddleware(EitherModeMiddleware):
    """Answers a request ``check_request`` refuses with a JSON 4xx, before any other middleware
    reads it."""

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        refused = _refusal(request)
        return refused if refused is not None else self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> Any:
        refused = _refusal(request)
        return refused if refused is not None else await self.get_response(request)


def _refusal(request: HttpRequest) -> JsonResponse | None:
    try:
        check_request(request)
    except UntrustedInputError as exc:
        return JsonResponse(exc.as_dict(), status=exc.status)
    return None


class JSONParser(Parser):
    """django-ninja's body parser, with ``loads``'s checks: every API's JSON goes through it."""

    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        return cast(dict[str, Any], loads(request.body))

"""Trace exports as HTTP downloads (the ops API and the admin action), streamed a chunk at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from telemetry.exports import FORMAT_VERSION, ExportOptions, encode_line

# Bytes per chunk of an HTTP download.
HTTP_CHUNK_BYTES = 64 * 1024


def export_filename(options: ExportOptions) -> str:
    return f"traces-{options.format}-{timezone.now():%Y%m%dT%H%M%SZ}.jsonl"


def _chunks(lines: Iterator[str]) -> Iterator[bytes]:
    buffer: list[bytes] = []
    filled = 0
    for line in lines:
        data = encode_line(line)
        buffer.append(data)
        filled += len(data)
        if filled >= HTTP_CHUNK_BYTES:
            yield b"".join(buffer)
            buffer, filled = [], 0
    if buffer:
        yield b"".join(buffer)


def _next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)


async def _chunks_from_thread(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    # Thread-sensitive: every step runs in the request's one sync thread, which owns the database
    # connection (and the open cursor) the generator reads from.
    step = sync_to_async(_next_chunk, thread_sensitive=True)
    try:
        while (chunk := await step(chunks)) is not None:
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            await sync_to_async(close, thread_sensitive=True)()


def jsonl_response(request: HttpRequest, lines: Iterator[str], *, filename: str) -> StreamingHttpResponse:
    """A streamed JSONL download of ``lines``.

    Under ASGI (uvicorn) Django drains a synchronous iterator into a list before sending it, which
    would hold the whole export in memory; there the lines are pulled from a thread instead, a
    64 KiB chunk at a time. Under WSGI (and the test client) the plain iterator streams as it is.
    """
    chunks = _chunks(lines)
    content: Iterator[bytes] | AsyncIterator[bytes] = (
        _chunks_from_thread(chunks) if isinstance(request, ASGIRequest) else chunks
    )
    response = StreamingHttpResponse(content, content_type="application/x-ndjson")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["X-Export-Format-Version"] = str(FORMAT_VERSION)
    return response

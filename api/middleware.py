"""ASGI middleware: the request body limit, and the last line against a 500 with a trace."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_body

logger = logging.getLogger("api")

MAX_BODY_BYTES = 64 * 1024


class PayloadTooLarge(HTTPException):
    """The request body passed the limit while it was being read."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body is larger than {max_bytes // 1024} KiB")


class TrackedSend:
    """An ASGI `send` that remembers whether the response has started.

    Once it has, an error can no longer be answered with a response of its own.
    """

    def __init__(self, send: Send) -> None:
        self.send = send
        self.response_started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.response_started = True
        await self.send(message)


class BodySizeLimit:
    """413 for a body over `max_bytes`, whether declared by Content-Length or streamed.

    The declared length is refused before anything is read; a body without one
    (chunked) or longer than it claims is cut off as soon as the count passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _too_large(self.max_bytes)(scope, receive, send)
            return

        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI passes HTTPExceptions raised while reading the body on
                    # to the error handlers, which answer 413.
                    raise PayloadTooLarge(self.max_bytes)
            return message

        tracked = TrackedSend(send)
        try:
            await self.app(scope, counting_receive, tracked)
        except PayloadTooLarge:
            # Read by something without those handlers: answer here if still possible.
            if tracked.response_started:
                raise
            await _too_large(self.max_bytes)(scope, receive, send)


class CatchAll:
    """Any exception no handler took becomes a logged 500 with a JSON body and no trace."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracked = TrackedSend(send)
        try:
            await self.app(scope, receive, tracked)
        except Exception:
            logger.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if tracked.response_started:
                raise
            response = JSONResponse(
                error_body("internal_error", "internal error; it has been logged"),
                status_code=500,
            )
            await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(max_bytes: int) -> JSONResponse:
    error = PayloadTooLarge(max_bytes)
    return JSONResponse(error_body("payload_too_large", error.detail), status_code=413)

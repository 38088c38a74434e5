"""Every API error as JSON `{"error": {"type", "message"}}`, and the handlers that make it so."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import DomainError, Overloaded, describe_field_errors, unreachable
from core.outages import OUTAGES

logger = logging.getLogger("api")

# Error `type` values by HTTP status, for errors raised by the framework itself.
TYPE_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "idempotency_conflict",
    413: "payload_too_large",
    422: "validation_error",
    429: "overloaded",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """An error the API answers with `status` and `{"error": {"type", "message"}}`."""

    def __init__(
        self, status: int, type: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        # Headers the answer carries besides the body (`Retry-After` of a 429).
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body of the answer."""
        return error_body(self.type, self.message)


class ErrorDetail(BaseModel):
    """What went wrong: a stable machine-readable `type` and a message a person can act on."""

    type: str
    message: str


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


def error_body(type_: str, message: str) -> dict[str, Any]:
    """`{"error": {"type": ..., "message": ...}}`."""
    return {"error": {"type": type_, "message": message}}


def unavailable(component: str) -> ApiError:
    """503 naming the part that did not answer; details stay in the server log."""
    return api_error(unreachable(component))


def api_error(error: DomainError) -> ApiError:
    """The answer to a refusal of the submission service (submission.service): its
    status, the `type` of that status, its message, and `Retry-After` for a 429."""
    headers = {"Retry-After": str(error.retry_after)} if isinstance(error, Overloaded) else None
    return ApiError(error.status, TYPE_BY_STATUS[error.status], error.message, headers)


def _request_field_errors(exc: RequestValidationError) -> str:
    # FastAPI locates body errors under "body"; the caller thinks of them as top-level fields.
    errors = []
    for error in exc.errors():
        loc = tuple(error.get("loc", ()))
        if loc[:1] == ("body",) and error.get("type") != "json_invalid":
            loc = loc[1:]
        if not loc and error.get("type") in ("model_attributes_type", "dict_type"):
            error = {**error, "msg": 'must be a JSON object such as {"args": {...}}'}
        errors.append({**error, "loc": loc})
    return describe_field_errors(errors)


def _json(
    status: int, type_: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse(error_body(type_, message), status_code=status, headers=headers)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _json(exc.status, exc.type, exc.message, exc.headers)


async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    error = api_error(exc)
    return _json(error.status, error.type, error.message, error.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_ = TYPE_BY_STATUS.get(exc.status_code, "http_error")
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return _json(exc.status_code, type_, message)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _json(422, "validation_error", _request_field_errors(exc))


def _outage(component: str) -> Any:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        logger.warning(
            "%s unreachable during %s %s: %s", component, request.method, request.url.path, exc
        )
        error = unavailable(component)
        return _json(error.status, error.type, error.message)

    return handle


def install_error_handlers(app: FastAPI) -> None:
    """Answer every expected error as JSON; outages the routes did not map become 503."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for component, errors in OUTAGES:
        for error_class in errors:
            app.add_exception_handler(error_class, _outage(component))

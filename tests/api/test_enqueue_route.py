"""`EnqueueRoute` resolves the enqueue endpoint's token and body itself, for speed; its
refusals must stay the ones FastAPI's own resolution of the same endpoint gives."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from api import routes
from api.errors import install_error_handlers
from tests.api.support import SECRET, serving, token


async def _stock_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return await request_validation_exception_handler(request, exc)


async def _stock_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return await http_exception_handler(request, exc)


def _app(router: APIRouter) -> FastAPI:
    # The API's own answers except for the body and HTTP errors, which get FastAPI's stock
    # ones (`{"detail": [...]}`): the comparison then sees every field of every error,
    # not only the one-line message the API builds from them.
    app = FastAPI()
    install_error_handlers(app)
    app.add_exception_handler(RequestValidationError, _stock_validation_error)
    app.add_exception_handler(HTTPException, _stock_http_error)
    app.include_router(router)
    app.state.auth_secret = SECRET
    app.state.max_token_ttl = 3600
    return app


@pytest.fixture(scope="module")
def urls() -> Iterator[tuple[str, str]]:
    """Base URLs of the endpoint behind `EnqueueRoute` and behind a stock route."""
    stock = APIRouter()
    stock.add_api_route("/v1/tasks/{name}", routes.enqueue, methods=["POST"], status_code=202)
    with serving(_app(routes.router)) as ours, serving(_app(stock)) as theirs:
        yield ours, theirs


JSON = {"Content-Type": "application/json"}

BAD_BODIES: dict[str, tuple[bytes, dict[str, str]]] = {
    "not JSON": (b'{"args": {', JSON),
    "JSON cut short after a key": (b'{"args"', JSON),
    "not UTF-8": (b'{"args": "\xff\xfe\xfa"}', JSON),
    "JSON under a text content type": (b'{"args": {}}', {"Content-Type": "text/plain"}),
    "JSON without a content type": (b'{"args": {}}', {}),
    "a JSON array": (b"[]", JSON),
    "a JSON string": (b'"args"', JSON),
    "args not an object": (b'{"args": [1, 2]}', JSON),
    "countdown a boolean": (b'{"args": {}, "countdown": true}', JSON),
    "wait a string": (b'{"args": {}, "wait": "5"}', JSON),
    "empty idempotency key": (b'{"args": {}, "idempotency_key": ""}', JSON),
    "idempotency key a number": (b'{"args": {}, "idempotency_key": 7}', JSON),
    "an unknown field": (b'{"args": {}, "argz": {}}', JSON),
    "several faults at once": (b'{"args": 1, "wait": "x", "extra": true}', JSON),
    "a JSON-suffixed content type": (b'{"args": 1}', {"Content-Type": "application/x+json"}),
}


def _answer(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    response = httpx.post(f"{url}/v1/tasks/peer.request", content=body, headers=headers)
    return response.status_code, response.json()


@pytest.mark.parametrize("case", BAD_BODIES)
@pytest.mark.parametrize("with_token", [True, False], ids=["token", "no token"])
def test_bad_bodies_are_refused_as_stock_fastapi_refuses_them(
    urls: tuple[str, str], case: str, with_token: bool
) -> None:
    body, headers = BAD_BODIES[case]
    if with_token:
        headers = {**headers, "Authorization": f"Bearer {token(['*'])}"}
    ours, theirs = (_answer(url, body, headers) for url in urls)
    assert ours == theirs
    # Every case is refused before the endpoint runs: a 401 without a token when the
    # body is JSON, else a 400 or 422 whatever the token.
    assert ours[0] in (400, 401, 422)

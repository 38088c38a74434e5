"""`GET /metrics`: the Prometheus series of `core.metrics`, for tokens with `metrics:read`."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.auth import CurrentCaller
from api.errors import ApiError, ErrorBody
from core.metrics import metrics_registry

METRICS_SCOPE = "metrics:read"

router = APIRouter()
_registry = metrics_registry()


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."},
        401: {"model": ErrorBody, "description": "Missing, invalid or expired token."},
        403: {"model": ErrorBody, "description": "The token's scope does not cover metrics:read."},
        503: {"model": ErrorBody, "description": "The database or broker is unreachable."},
    },
    summary="Prometheus metrics",
    tags=["operations"],
)
def metrics(caller: CurrentCaller) -> Response:
    """Pool sizes, waits, open matches, outbox lag and queue lengths, read at scrape time."""
    if not caller.may_use(METRICS_SCOPE):
        patterns = ", ".join(caller.scopes) or "none"
        raise ApiError(
            403,
            "forbidden",
            f"reading metrics needs a token whose scope covers {METRICS_SCOPE!r} "
            f"(scope: {patterns}); matchops token --sub NAME --scope {METRICS_SCOPE}",
        )
    return Response(generate_latest(_registry), media_type=CONTENT_TYPE_LATEST)

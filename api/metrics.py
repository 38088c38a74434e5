"""`GET /metrics`: the Prometheus series of `api.series`, for tokens with `metrics:read`,
and the enqueue refusals this API process answered."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import CurrentCaller
from api.errors import ApiError, ErrorBody
from api.series import metrics_registry

METRICS_SCOPE = "metrics:read"
ENQUEUE_PREFIX = "/v1/tasks/"
# The statuses an enqueue is refused with keep their own label; anything else (a status
# a future route or proxy adds) is summed under "other", so the label stays bounded.
REFUSAL_STATUSES = ("400", "401", "403", "404", "409", "413", "422", "429", "500", "503")
OTHER_STATUS = "other"

router = APIRouter()
_registry = metrics_registry()
# Refusals leave no row anywhere (a 503 is answered because the database is down), so
# each API process counts its own since it started, as Prometheus counters are: scrape
# every API process as a target of its own and sum across instances.
ENQUEUE_REFUSALS = Counter(
    "matchops_enqueue_refusals",
    "Enqueue requests (POST /v1/tasks/{name}) this API process refused, by HTTP status.",
    labelnames=["status"],
    registry=_registry,
)
for _status in (*REFUSAL_STATUSES, OTHER_STATUS):
    ENQUEUE_REFUSALS.labels(status=_status)


class CountRefusals:
    """ASGI middleware counting every enqueue answered with a status of 400 or more.

    Outermost, so it also sees the refusals no route answers: a body over the size
    limit, a token refused before the route runs, a request that does not parse.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_enqueue(scope):
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                status = str(message["status"])
                label = status if status in REFUSAL_STATUSES else OTHER_STATUS
                ENQUEUE_REFUSALS.labels(status=label).inc()
            await send(message)

        await self.app(scope, receive, counting_send)


def _is_enqueue(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] != "POST":
        return False
    path: str = scope["path"]
    name = path.removeprefix(ENQUEUE_PREFIX)
    return name != path and bool(name) and "/" not in name


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
    """Pool sizes, waits, open matches, outbox lag, queue lengths, failures and refusals."""
    if not caller.may_use(METRICS_SCOPE):
        patterns = ", ".join(caller.scopes) or "none"
        raise ApiError(
            403,
            "forbidden",
            f"reading metrics needs a token whose scope covers {METRICS_SCOPE!r} "
            f"(scope: {patterns}); matchops token --sub NAME --scope {METRICS_SCOPE}",
        )
    return Response(generate_latest(_registry), media_type=CONTENT_TYPE_LATEST)

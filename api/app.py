"""The FastAPI application: `uvicorn --factory api.app:create_app`."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi_offline import FastAPIOffline

from api.admission import Admission
from api.errors import install_error_handlers
from api.health import BrokerWatch
from api.intake import Intake
from api.metrics import CountRefusals
from api.metrics import router as metrics_router
from api.middleware import MAX_BODY_BYTES, BodySizeLimit, CatchAll
from api.routes import router
from api.waiters import OutcomeWaiters
from core import tracing
from core.db import libpq_conninfo
from core.logs import leave_out_routine_lines
from core.settings import get_settings
from submission.service import finished_among, task_catalogue

DESCRIPTION = """\
Enqueue matchops tasks and read their outcome.

Every `/v1` route needs `Authorization: Bearer <token>`: a JWT signed HS256 with
`AUTH_SECRET`, claims `sub`, `exp` and `scope`, a list of task-name patterns the
caller may use (`["peer.*"]`, `["*"]`). `matchops token --sub NAME --scope 'peer.*'`
prints one.

Errors are `{"error": {"type", "message"}}`: 401, 403, 404, 409, 413 (body over
64 KiB), 422 (the message names the field and why), 429 (the task's queue is behind,
with `MAX_QUEUE_WAIT_SECONDS` set: try again after `Retry-After` seconds; nothing was
enqueued), 503 (a dependency is down; nothing was enqueued).
"""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The intake records what the routes accept; the watch knows whether the broker
    # answers; admission knows which queues are too far behind.
    broker_watch: BrokerWatch = app.state.broker_watch
    intake: Intake = app.state.intake
    admission: Admission = app.state.admission
    broker_watch.start()
    admission.start()
    intake.start()
    # Everything loaded so far (tasks, models, schemas: hundreds of thousands of
    # objects) lives as long as the process. Out of the collector's sight, a full
    # collection under load scans what requests allocate, not the start-up state.
    gc.freeze()
    try:
        yield
    finally:
        await intake.stop()
        admission.stop()
        broker_watch.stop()


def _to_docs() -> RedirectResponse:
    """`GET /` sends a browser to the interactive documentation."""
    return RedirectResponse("/docs")


def create_app() -> FastAPI:
    """Build the API; raises `MissingSetting` naming AUTH_SECRET when it is unset or short."""
    settings = get_settings()
    auth_secret = settings.api_secret
    # Before anything opens an engine: their statements are traced from the start.
    tracing.configure("api")
    # After uvicorn set its loggers up, which it does before calling this factory.
    leave_out_routine_lines(settings)
    # Import every task module now, so the first request does not pay for it and a
    # broken task module stops start-up instead of a request.
    task_catalogue()

    # Swagger UI and ReDoc assets come from the installed package, not a CDN: the
    # docs work on a machine without internet access.
    app = FastAPIOffline(
        title="matchops",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=_lifespan,
        static_url="/docs-assets",
    )
    app.add_api_route("/", _to_docs, include_in_schema=False)
    app.state.auth_secret = auth_secret
    app.state.max_token_ttl = settings.max_token_ttl_seconds
    app.state.broker_watch = BrokerWatch()
    app.state.intake = Intake(libpq_conninfo())
    app.state.admission = Admission(settings.max_queue_wait_seconds)
    app.state.waiters = OutcomeWaiters(finished_among)
    app.include_router(router)
    app.include_router(metrics_router)
    install_error_handlers(app)
    # Added last is outermost: the size limit runs before anything reads the body.
    app.add_middleware(CatchAll)
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    # Outside the size limit: a body refused there is an enqueue refused too.
    app.add_middleware(CountRefusals)
    return app

"""Which routine lines the processes write: a line per task and per HTTP call only when
LOG_SUCCESSES asks for them.

At INFO, Celery writes two lines for every task (`received`, in the worker's main
process; `succeeded`, with the repr of the result, in the pool process), and uvicorn one
for every HTTP call. Each of these outcomes is recorded anyway: in the ledger
(`GET /v1/tasks/{id}`), in Flower's task events and in `/metrics`. Written, they are
most of a busy worker's log (two lines per task: 30 million a day at the 176 tasks/s of
80 peer requests/s) and cost about 0.2 ms of CPU per peer request (docs/benchmarks.md,
Log lines), so by default they are left out. Everything else at the level asked for
stays: a retry, a refusal ("raised expected"), a failure, an HTTP call answered 4xx or
5xx, every line of matchops' own.
"""

from __future__ import annotations

import logging

from celery.app.trace import LOG_RECEIVED, LOG_SUCCESS

from core.settings import Settings

# Where each routine line comes from: Celery's worker strategy logs the receipt, its
# tracer the success, uvicorn's access logger every call.
RECEIVED_LOGGER = "celery.worker.strategy"
SUCCEEDED_LOGGER = "celery.app.trace"
CALLS_LOGGER = "uvicorn.access"
# The first HTTP status a call logs with: refusals and errors.
FIRST_LOGGED_STATUS = 400


class WithoutFormats(logging.Filter):
    """Drops the records logged with one of the given format strings."""

    def __init__(self, *formats: str) -> None:
        super().__init__()
        self._formats = frozenset(formats)

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether the record is kept."""
        return not (isinstance(record.msg, str) and record.msg in self._formats)


class RefusedCalls(logging.Filter):
    """Keeps uvicorn's access lines of calls answered FIRST_LOGGED_STATUS or above."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether the record is kept: anything but an access line below 400."""
        # uvicorn logs (client, method, path, HTTP version, status).
        args = record.args
        status = args[4] if isinstance(args, tuple) and len(args) == 5 else None
        return not isinstance(status, int) or status >= FIRST_LOGGED_STATUS


_FILTERS: dict[str, logging.Filter] = {
    RECEIVED_LOGGER: WithoutFormats(LOG_RECEIVED),
    SUCCEEDED_LOGGER: WithoutFormats(LOG_SUCCESS),
    CALLS_LOGGER: RefusedCalls(),
}


def leave_out_routine_lines(settings: Settings) -> None:
    """Unless LOG_SUCCESSES is set, drop the per-task and per-call lines from this
    process's logs (a forked pool process inherits the filters)."""
    if settings.log_successes:
        return
    for name, routine in _FILTERS.items():
        logger = logging.getLogger(name)
        if routine not in logger.filters:
            logger.addFilter(routine)

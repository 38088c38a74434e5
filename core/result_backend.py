"""Celery's Redis result backend, without the read before each stored success.

Celery reads a task's stored result before it writes one, so that a delivery of a task
that already succeeded (a redelivery, a duplicate send) cannot overwrite its success
with another state. Under matchops' ledger every delivery after the first replays the
first one's outcome (core.task_store, step 4), so a success written again is the same
success: this backend writes a success at once, one Redis round trip less for every
result a sibling's task stores, and keeps Celery's read before any other state, which
still must not overwrite a success.

celeryconfig selects it for `redis://` and `rediss://` result backends.
"""

from __future__ import annotations

from typing import Any

from celery import states
from celery.backends.redis import RedisBackend
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str

# What celeryconfig puts before a Redis URL in `result_backend`.
BACKEND = "core.result_backend:Backend"


class Backend(RedisBackend):  # type: ignore[misc]
    """Celery's Redis result backend; a success is written without reading first."""

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        if state != states.SUCCESS:
            return super()._store_result(task_id, result, state, traceback, request, **kwargs)
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        meta["task_id"] = bytes_to_str(task_id)
        try:
            self._set_with_state(self.get_key_for_task(task_id), self.encode(meta), state)
        except BackendStoreError as exc:
            raise BackendStoreError(str(exc), state=state, task_id=task_id) from exc
        return result

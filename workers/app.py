"""The Celery application. `celery -A workers.app worker` and `matchops worker` load it."""

from __future__ import annotations

from typing import Any

from celery import Celery

from celeryconfig import celery_config
from core.settings import get_settings
from workers.specs import TASK_MODULES, import_task_modules


class MatchopsCelery(Celery):  # type: ignore[misc]
    """Celery, configured before it binds its tasks: the configuration (routes, beat
    schedule) is derived from the task declarations, so every task module is imported
    first, and no task is bound to a configuration still being built."""

    def finalize(self, auto: bool = False) -> None:
        """Configure the app (see `_configure_from_settings`), then finalize it."""
        _ = self.conf.task_routes
        super().finalize(auto=auto)

    @property
    def backend_cls(self) -> str | None:
        """The result backend as the configuration names it (celeryconfig), which Celery
        reads from here before its configuration.

        Celery's command line copies RESULT_BACKEND, the variable matchops' settings read
        too, into CELERY_RESULT_BACKEND, and Celery lets that variable win over the
        configured `result_backend`: a worker, beat or Flower started from the command
        line would store and read results through Celery's own Redis backend, not
        matchops' (core.result_backend).
        """
        configured: str | None = self.conf.get("result_backend")
        return configured


app = MatchopsCelery("matchops", include=list(TASK_MODULES))


@app.on_configure.connect
def _configure_from_settings(sender: Celery, **_: Any) -> None:
    # Celery configures itself when its configuration is first read, not at import: the
    # settings are read then, after whatever set the environment up (embedded servers,
    # a test's overrides) has run. What is set here counts as configured, not as a
    # default, so `celery inspect conf` and Flower show it. The routes and the beat
    # schedule come from the task declarations, so the task modules are imported first.
    import_task_modules()
    sender.conf.update(celery_config(get_settings()))


import workers.signals  # noqa: E402  (connects the worker signal handlers)
import workers.triggers  # noqa: E402,F401  (sends follow-ups after commits)


def load_tasks() -> None:
    """Import every task module so the registry is complete outside a worker."""
    app.loader.import_default_modules()

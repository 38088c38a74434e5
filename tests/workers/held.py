"""What the time-limit tests and their workers share about the held tasks
(tests.workers.held_task).

The tests must not import the tasks themselves: Celery's `send_task` copies the time
limits of a task registered in the sending process into the message, and the worker
then obeys those instead of its own.
"""

from __future__ import annotations

# In a transaction of its own, as most tasks run.
HELD_IN_TRANSACTION = "tests.held_in_transaction"
# Holding its `task_runs` row locked while it runs, as a task with its own transactions.
HELD_WITH_ROW_LOCKED = "tests.held_with_row_locked"

# A worker that loads the held tasks, and the limits it runs them under.
WORKER_ARGS = ("-I", "tests.workers.held_task")
# Short, and as start-up requires: the lock wait below the soft limit and the silent-client
# bound, which is below the hard limit.
LIMITS = {
    "TASK_SOFT_TIME_LIMIT": "2",
    "TASK_TIME_LIMIT": "5",
    "DB_SILENT_CLIENT_SECONDS": "4",
    "DB_LOCK_TIMEOUT_MS": "1000",
}
KILLED = "killed at the hard time limit of 5 s (TASK_TIME_LIMIT)"

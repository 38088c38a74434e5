"""Task ids are text: a sibling's own Celery app may choose any string as a task id
(`"order-42"`), not only a UUID, and the ledger keys its rows by that id.

Revision ID: 0010_text_task_ids
Revises: 0009_trace_context
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0010_text_task_ids"
down_revision: str | None = "0009_trace_context"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PROGRESS_FK = "fk_task_progress_task_id_task_runs"


def _retype(column_type: sa.types.TypeEngine[Any], using: str) -> None:
    op.drop_constraint(PROGRESS_FK, "task_progress", type_="foreignkey")
    for table in ("task_runs", "task_progress"):
        op.alter_column(table, "task_id", type_=column_type, postgresql_using=using)
    op.create_foreign_key(
        PROGRESS_FK, "task_progress", "task_runs", ["task_id"], ["task_id"], ondelete="CASCADE"
    )


def upgrade() -> None:
    _retype(sa.Text(), "task_id::text")


def downgrade() -> None:
    # Ids that are not UUIDs have no place in a uuid column: their rows go (their
    # progress rows with them, by the cascade).
    op.execute(
        "DELETE FROM task_runs WHERE task_id !~* "
        "'^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$'"
    )
    _retype(sa.Uuid(), "task_id::uuid")

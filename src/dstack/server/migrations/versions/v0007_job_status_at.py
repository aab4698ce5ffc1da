"""Jobs record when they entered their current status (`status_at`), indexed with the
status: the scheduler's deadlines find the jobs stuck in a state with one indexed query.

Jobs not finished at the upgrade get the upgrade's time: their deadlines start afresh
(their real entry time is in the history, but the server was not listening while it was
down). Finished jobs get their `finished_at`.

Revision ID: 0007
Revises: 0006
Create Date: 2023-05-03
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("status_at", sa.DateTime))
        batch.create_index("ix_jobs_status_at", ["status", "status_at"])
    jobs = sa.table(
        "jobs", sa.column("status_at", sa.DateTime), sa.column("finished_at", sa.DateTime)
    )
    now = datetime.now(UTC).replace(tzinfo=None)  # the UTC columns hold naive UTC
    op.execute(jobs.update().where(jobs.c.finished_at.is_(None)).values(status_at=now))
    op.execute(
        jobs.update().where(jobs.c.finished_at.is_not(None)).values(status_at=jobs.c.finished_at)
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_status_at")
        batch.drop_column("status_at")

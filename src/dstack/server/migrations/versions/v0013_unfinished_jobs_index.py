"""The runs with an unfinished job, found without reading the finished ones: a partial
index on `jobs.run_name` of the jobs not `done`, `failed`, `stopped` or `aborted`
(`dstack ps` on a server holding a long history).

Revision ID: 0013
Revises: 0012
Create Date: 2023-06-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# As `db/models.py` states it: a query uses the index only with the same predicate.
UNFINISHED = sa.text("status NOT IN ('done', 'failed', 'stopped', 'aborted')")


def upgrade() -> None:
    op.create_index(
        "ix_jobs_unfinished",
        "jobs",
        ["run_name"],
        sqlite_where=UNFINISHED,
        postgresql_where=UNFINISHED,
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_unfinished", table_name="jobs")

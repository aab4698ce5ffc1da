"""A finished job keeps the JSON the API shows for it (`jobs.api_json`, zlib-compressed,
written once when it finishes): listings of a long history splice it instead of building
each job's model again. Jobs finished before have none and are built as before (nothing is
backfilled).

Revision ID: 0014
Revises: 0013
Create Date: 2023-06-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("api_json", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("api_json")

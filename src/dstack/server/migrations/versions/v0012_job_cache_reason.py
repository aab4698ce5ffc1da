"""Jobs keep why they ran (or `cached`), as the cache decided at submit: the run's page
shows the plan's explanation after the fact.

Revision ID: 0012
Revises: 0011
Create Date: 2023-06-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("cache_reason", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("cache_reason")

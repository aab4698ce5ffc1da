"""Runs keep the request they were submitted with, and what its external deps resolved to,
so the server can submit them again (re-run).

Revision ID: 0011
Revises: 0010
Create Date: 2023-06-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("submission", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("submission")

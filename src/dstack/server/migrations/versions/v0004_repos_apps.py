"""Repository credentials for cloning on runners (`dstack init`) and app readiness of jobs.

Revision ID: 0004
Revises: 0003
Create Date: 2023-04-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "repo_credentials",
        sa.Column("repo_id", sa.String(500), primary_key=True),
        sa.Column("url", sa.String(1000), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("secret", sa.Text),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("apps_ready_at", sa.DateTime))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("apps_ready_at")
    op.drop_table("repo_credentials")

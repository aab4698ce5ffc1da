"""The web UI: browser sessions and sign-in codes; indexes for its runs list.

Revision ID: 0010
Revises: 0009
Create Date: 2023-06-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ui_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("user_name", sa.String(200), nullable=False, index=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False, index=True),
    )
    op.create_index("ix_runs_submitted_name", "runs", ["submitted_at", "name"])
    op.create_index("ix_runs_repo_submitted_name", "runs", ["repo_id", "submitted_at", "name"])


def downgrade() -> None:
    op.drop_index("ix_runs_repo_submitted_name", "runs")
    op.drop_index("ix_runs_submitted_name", "runs")
    op.drop_table("ui_sessions")

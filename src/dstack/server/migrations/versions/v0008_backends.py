"""Cloud backends and the instances they created.

Revision ID: 0008
Revises: 0007
Create Date: 2023-05-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backends",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("credentials", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "instances",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("backend", sa.String(100), nullable=False),
        sa.Column("cloud_id", sa.String(100), index=True),
        sa.Column("offer", sa.JSON, nullable=False),
        sa.Column("instance_type", sa.String(100), nullable=False),
        sa.Column("region", sa.String(50), nullable=False),
        sa.Column("spot", sa.Boolean, nullable=False),
        sa.Column("price", sa.Float, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("job_id", sa.String(32), index=True),
        sa.Column("runner_id", sa.String(32), index=True),
        sa.Column("token_hash", sa.String(64), unique=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("registered_at", sa.DateTime),
        sa.Column("idle_since", sa.DateTime),
        sa.Column("terminated_at", sa.DateTime),
    )
    op.create_index("ix_instances_backend_state", "instances", ["backend", "state"])


def downgrade() -> None:
    op.drop_table("instances")
    op.drop_table("backends")

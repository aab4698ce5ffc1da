"""Initial schema: runs, jobs, runners, logs.

Revision ID: 0001
Revises:
Create Date: 2023-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("name_prefix", sa.String(100), nullable=False, index=True),
        sa.Column("name_counter", sa.Integer, nullable=False),
        sa.Column("repo_id", sa.String(500), nullable=False, index=True),
        sa.Column("repo", sa.JSON, nullable=False),
        sa.Column("workflow_name", sa.String(200)),
        sa.Column("provider", sa.String(100)),
        sa.Column("args", sa.JSON, nullable=False),
        sa.Column("variables", sa.JSON, nullable=False),
        sa.Column("tag", sa.String(200)),
        sa.Column("user", sa.String(200), nullable=False),
        sa.Column("submitted_at", sa.DateTime, nullable=False, index=True),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "run_name",
            sa.String(100),
            sa.ForeignKey("runs.name", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("index", sa.Integer, nullable=False),
        sa.Column("workflow_name", sa.String(200)),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("deps", sa.JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(40)),
        sa.Column("message", sa.Text),
        sa.Column("exit_code", sa.Integer),
        sa.Column("runner_id", sa.String(32), index=True),
        sa.Column("gpu_indexes", sa.JSON, nullable=False),
        sa.Column("host_ports", sa.JSON, nullable=False),
        sa.Column("cache_key", sa.String(100)),
        sa.Column("reused_from", sa.String(100)),
        sa.Column("history", sa.JSON, nullable=False),
        sa.Column("stop_requested", sa.String(10)),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("submitted_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime),
    )
    op.create_index("ix_jobs_status_submitted", "jobs", ["status", "submitted_at"])
    op.create_table(
        "runners",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("resources", sa.JSON, nullable=False),
        sa.Column("executors", sa.JSON, nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("backend", sa.String(50), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("registered_at", sa.DateTime, nullable=False),
        sa.Column("last_heartbeat", sa.DateTime),
    )
    op.create_table(
        "logs",
        sa.Column(
            "job_id",
            sa.String(32),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("timestamp", sa.DateTime, nullable=False),
        sa.Column("stream", sa.String(10), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("logs")
    op.drop_table("runners")
    op.drop_index("ix_jobs_status_submitted", table_name="jobs")
    op.drop_table("jobs")
    op.drop_table("runs")

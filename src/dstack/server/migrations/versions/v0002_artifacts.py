"""Artifacts: job manifests, tags, workflow caches, blob touches; cache columns on jobs.

Revision ID: 0002
Revises: 0001
Create Date: 2023-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("reused_job_id", sa.String(32)))
        batch.add_column(sa.Column("cache_inputs", sa.JSON))
        batch.add_column(sa.Column("external_artifacts", sa.JSON))
    op.create_index("ix_jobs_cache_key", "jobs", ["cache_key"])
    op.create_table(
        "job_manifests",
        sa.Column(
            "job_id",
            sa.String(32),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("path", sa.String(1000), primary_key=True),
        sa.Column("manifest", sa.JSON, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "tags",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("run_name", sa.String(100), sa.ForeignKey("runs.name"), nullable=False),
        sa.Column("repo_id", sa.String(500), nullable=False),
        sa.Column("workflow_name", sa.String(200)),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_tags_run_name", "tags", ["run_name"])
    op.create_index("ix_tags_repo_id", "tags", ["repo_id"])
    op.create_table(
        "workflow_caches",
        sa.Column("repo_id", sa.String(500), primary_key=True),
        sa.Column("workflow_name", sa.String(200), primary_key=True),
        sa.Column("path", sa.String(1000), primary_key=True),
        sa.Column("manifest", sa.JSON, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "blob_touches",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("touched_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("blob_touches")
    op.drop_table("workflow_caches")
    op.drop_index("ix_tags_repo_id", table_name="tags")
    op.drop_index("ix_tags_run_name", table_name="tags")
    op.drop_table("tags")
    op.drop_table("job_manifests")
    op.drop_index("ix_jobs_cache_key", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("external_artifacts")
        batch.drop_column("cache_inputs")
        batch.drop_column("reused_job_id")

"""Tags and secrets belong to a repository: keyed by (repo_id, name). A secret whose
`repo_id` is empty is global (an admin's, seen by every repository's jobs).

Revision ID: 0006
Revises: 0005
Create Date: 2023-05-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing secrets were global and stay so; a new table, since the primary key changes.
    op.create_table(
        "secrets_new",
        sa.Column("repo_id", sa.String(500), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.execute(
        "INSERT INTO secrets_new (repo_id, name, value, created_at, updated_at) "
        "SELECT '', name, value, created_at, updated_at FROM secrets"
    )
    op.drop_table("secrets")
    op.rename_table("secrets_new", "secrets")
    op.create_table(
        "tags_new",
        sa.Column("repo_id", sa.String(500), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("run_name", sa.String(100), sa.ForeignKey("runs.name"), nullable=False),
        sa.Column("workflow_name", sa.String(200)),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.execute(
        "INSERT INTO tags_new (repo_id, name, run_name, workflow_name, created_at) "
        "SELECT repo_id, name, run_name, workflow_name, created_at FROM tags"
    )
    op.drop_table("tags")
    op.rename_table("tags_new", "tags")
    op.create_index("ix_tags_run_name", "tags", ["run_name"])
    _rename_constraints()


def _rename_constraints() -> None:
    """PostgreSQL keeps the constraint names of the `*_new` tables through the rename: give
    them the names a table created as `secrets`/`tags` has, which later migrations expect."""
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite names no constraints
    for table, old, new in [
        ("secrets", "secrets_new_pkey", "secrets_pkey"),
        ("tags", "tags_new_pkey", "tags_pkey"),
        ("tags", "tags_new_run_name_fkey", "tags_run_name_fkey"),
    ]:
        op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {old} TO {new}")


def downgrade() -> None:
    raise NotImplementedError("tags and secrets scoped to repositories cannot be made global again")
